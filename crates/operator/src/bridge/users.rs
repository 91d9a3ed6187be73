//! Who a chat user is in Kubernetes: a YAML file (the chart mounts a ConfigMap) mapping Slack
//! user IDs and Teams users (`from.aadObjectId`, else `from.id`) to a Kubernetes user name and
//! the groups they decide as:
//!
//! ```yaml
//! slack:
//!   U024BE7LH: {user: bob@example.com, groups: [platform-oncall]}
//! teams:
//!   6f5b3c2a-0000-4000-8000-0000000000b0: {user: carol@example.com}
//! ```
//!
//! A mounted file rather than an API read: the bridge needs no permission to read anything,
//! and the kubelet refreshes the file when the ConfigMap changes; it is read again whenever its
//! modification time changes. An unreadable new version is logged and the last good one kept.
//! `system:` users and groups are refused at load: the bridge never speaks for the control
//! plane or a ServiceAccount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

/// The Kubernetes identity a chat user acts as.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapped {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Which chat platform a user ID is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    Slack,
    Teams,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Teams => "teams",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Slack => "Slack",
            Self::Teams => "Teams",
        }
    }
}

/// The whole map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserMap {
    #[serde(default)]
    pub slack: BTreeMap<String, Mapped>,
    #[serde(default)]
    pub teams: BTreeMap<String, Mapped>,
}

impl UserMap {
    pub fn parse(text: &str) -> Result<Self, String> {
        let map: UserMap = if text.trim().is_empty() {
            UserMap::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        for (platform, entries) in [("slack", &map.slack), ("teams", &map.teams)] {
            for (id, m) in entries {
                let name = m.user.trim();
                if name.is_empty() {
                    return Err(format!("{platform}.{id}: user is empty"));
                }
                if name.starts_with("system:") {
                    return Err(format!(
                        "{platform}.{id}: {name:?} is a system user; the bridge never impersonates one"
                    ));
                }
                if let Some(g) = m
                    .groups
                    .iter()
                    .find(|g| g.trim().is_empty() || g.starts_with("system:"))
                {
                    return Err(format!(
                        "{platform}.{id}: group {g:?} cannot be impersonated by the bridge (empty or system:)"
                    ));
                }
            }
        }
        Ok(map)
    }

    /// The Kubernetes identity of the first of `ids` the map knows.
    pub fn lookup(&self, platform: Platform, ids: &[&str]) -> Option<&Mapped> {
        let entries = match platform {
            Platform::Slack => &self.slack,
            Platform::Teams => &self.teams,
        };
        ids.iter()
            .filter(|id| !id.is_empty())
            .find_map(|id| entries.get(*id))
    }
}

/// The map file, read again when it changes.
#[derive(Debug)]
pub struct UserFile {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, UserMap)>,
}

impl UserFile {
    /// Reads the file now: a missing or bad map fails start-up, naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let (mtime, map) = read(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((mtime, map)),
        })
    }

    /// The current map (read again first when the file changed).
    pub fn current(&self) -> UserMap {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != state.0 {
            match read(&self.path) {
                Ok(fresh) => {
                    tracing::info!(
                        path = %self.path.display(),
                        slack = fresh.1.slack.len(),
                        teams = fresh.1.teams.len(),
                        "user map reloaded"
                    );
                    *state = fresh;
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), "user map not reloaded, keeping the last good one: {e}");
                    state.0 = mtime;
                }
            }
        }
        state.1.clone()
    }
}

fn read(path: &Path) -> Result<(Option<SystemTime>, UserMap), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the user map {}: {e}", path.display()))?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let map = UserMap::parse(&text)
        .map_err(|e| format!("the user map {} is not valid: {e}", path.display()))?;
    Ok((mtime, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
slack:
  U024BE7LH: {user: bob@example.com, groups: [platform-oncall]}
teams:
  6f5b3c2a-0000-4000-8000-0000000000b0: {user: carol@example.com}
  "29:1abc": {user: dave@example.com}
"#;

    #[test]
    fn chat_users_map_to_kubernetes_users_and_unknown_ones_to_nothing() {
        let m = UserMap::parse(MAP).unwrap();
        assert_eq!(
            m.lookup(Platform::Slack, &["U024BE7LH"]),
            Some(&Mapped {
                user: "bob@example.com".into(),
                groups: vec!["platform-oncall".into()]
            })
        );
        assert_eq!(m.lookup(Platform::Slack, &["U999"]), None);
        // Slack IDs are not Teams IDs.
        assert_eq!(m.lookup(Platform::Teams, &["U024BE7LH"]), None);
        // Teams: the Entra object ID first, then the channel user ID.
        assert_eq!(
            m.lookup(
                Platform::Teams,
                &["6f5b3c2a-0000-4000-8000-0000000000b0", "29:1abc"]
            )
            .map(|u| u.user.as_str()),
            Some("carol@example.com")
        );
        assert_eq!(
            m.lookup(Platform::Teams, &["", "29:1abc"])
                .map(|u| u.user.as_str()),
            Some("dave@example.com")
        );
        assert_eq!(UserMap::parse("").unwrap(), UserMap::default());
    }

    #[test]
    fn a_map_that_would_impersonate_the_system_or_misspells_a_field_is_refused() {
        for (bad, says) in [
            ("slack: {U1: {user: 'system:admin'}}", "system user"),
            (
                "slack: {U1: {user: bob, groups: ['system:masters']}}",
                "system:",
            ),
            ("slack: {U1: {user: ''}}", "user is empty"),
            ("slack: {U1: {username: bob}}", "unknown field"),
            ("discord: {}", "unknown field"),
        ] {
            let e = UserMap::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_a_bad_version_keeps_the_last_good_one() {
        let dir = std::env::temp_dir().join(format!("lapse-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.yaml");
        std::fs::write(&path, MAP).unwrap();
        let f = UserFile::load(&path).unwrap();
        assert!(f.current().slack.contains_key("U024BE7LH"));
        let touch = |text: &str, secs: u64| {
            std::fs::write(&path, text).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        touch("slack: {U777: {user: erin@example.com}}", 1_000);
        assert!(f.current().slack.contains_key("U777"));
        touch("slack: [not, a, map]", 2_000);
        assert!(f.current().slack.contains_key("U777"));
        assert!(UserFile::load(&dir.join("missing.yaml")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
