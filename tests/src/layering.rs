//! The house rule of docs/architecture.md, checked: within `lapse-api` and `lapse-controller`
//! no two top-level modules depend on each other, directly or through others. A cycle makes
//! a module impossible to understand (or test) without the ones that depend on it.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Top-level module → the top-level modules its code names as `crate::<module>`. Comments
    /// and test modules (`tests.rs`, `tests/`) do not count: tests may reach anywhere.
    fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let mut files = Vec::new();
        sources(src, &mut files);
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files {
            let rel = f.strip_prefix(src).unwrap_or(&f);
            let is_test = rel
                .components()
                .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs");
            let first = rel
                .components()
                .next()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_owned()
                })
                .unwrap_or_default();
            if is_test || first == "lib" || first == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            // Code only: a `#[cfg(test)] mod tests` block ends a file in this codebase.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let deps = g.entry(first.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != first {
                        deps.insert(name);
                    }
                }
            }
        }
        g
    }

    /// A cycle through `start`, if any, as the list of modules on it.
    fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            g: &BTreeMap<String, BTreeSet<String>>,
            node: &str,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|n| n == node) {
                let mut c = path[at..].to_vec();
                c.push(node.to_owned());
                return Some(c);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_owned());
            for next in g.get(node).into_iter().flatten() {
                if let Some(c) = visit(g, next, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(node.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        g.keys()
            .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_module_cycles_in_the_core_or_the_controller() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for krate in ["crates/api/src", "crates/controller/src"] {
            let g = graph(&root.join(krate));
            assert!(g.len() > 3, "{krate}: too few modules found: {g:?}");
            if let Some(c) = cycle(&g) {
                panic!("{krate}: modules depend on each other: {}", c.join(" -> "));
            }
        }
    }

    #[test]
    fn a_cycle_is_found() {
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            cycle(&g),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
