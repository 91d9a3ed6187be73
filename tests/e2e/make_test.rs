//! `make test` is CI's verdict (`.ci/run` ends in it), so it must fail whenever anything it runs
//! fails. These run the repository's own Makefile on a throwaway crate and check that a failing
//! test, a failing doc test and a failing step each make it exit non-zero and name what failed,
//! and that the rest still ran.

use std::path::{Path, PathBuf};
use std::process::Command;

use lapse_e2e::{scratch_dir, workspace_root};

/// A crate whose `src/lib.rs` is `lib`, formatted as `cargo fmt` leaves it unless `lib` is not;
/// removed (with its target dir) when the test ends, unless `LAPSE_E2E_KEEP` is set.
fn fixture(lib: &str) -> anyhow::Result<Fixture> {
    let dir = Fixture(scratch_dir("lapse-make-test")?);
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"fixture\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    Ok(dir)
}

struct Fixture(PathBuf);

impl std::ops::Deref for Fixture {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::env::var_os("LAPSE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct Run {
    ok: bool,
    output: String,
}

/// `make test TEST_STEPS=steps` with this repository's Makefile, in `dir`.
fn make_test(dir: &Path, steps: &str) -> anyhow::Result<Run> {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(dir)
        .arg("-f")
        .arg(workspace_root().join("Makefile"))
        .arg("test")
        .arg(format!("TEST_STEPS={steps}"));
    // This test itself runs under cargo, nextest and maybe make: none of their settings may
    // leak into the run under test.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("NEXTEST")
            || (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || ["MAKEFLAGS", "MAKELEVEL", "MFLAGS", "RUST_TEST_THREADS"].contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    // After the removals (which would take it away again when the parent has one): the
    // fixture's own target dir, not the Makefile's shared default, where the fixtures of the
    // tests running beside this one (all crates named `fixture`) would overwrite each other.
    cmd.env("CARGO_TARGET_DIR", dir.join("target"));
    let out = cmd.output()?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Run {
        ok: out.status.success(),
        output,
    })
}

const PASSING_DOC_TEST: &str =
    "/// ```\n/// assert_eq!(fixture::one(), 1);\n/// ```\npub fn one() -> u32 {\n    1\n}\n";

#[test]
fn a_failing_test_fails_make_test_and_every_other_test_still_runs() -> anyhow::Result<()> {
    let dir = fixture(&format!(
        "{PASSING_DOC_TEST}\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn deliberately_failing() {{\n        assert_eq!(super::one(), 2);\n    }}\n\n    #[test]\n    fn still_runs_after_the_failure() {{\n        assert_eq!(super::one(), 1);\n    }}\n}}\n"
    ))?;
    let run = make_test(&dir, "fmt-check unit-tests")?;
    assert!(
        !run.ok,
        "make test passed with a failing test:\n{}",
        run.output
    );
    assert!(
        run.output.contains("deliberately_failing"),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("make test: FAILED: unit-tests"),
        "{}",
        run.output
    );
    // --no-fail-fast: the passing test and the doc tests ran after the failure.
    assert!(
        run.output.contains("still_runs_after_the_failure"),
        "{}",
        run.output
    );
    assert!(run.output.contains("Doc-tests fixture"), "{}", run.output);
    Ok(())
}

#[test]
fn a_failing_doc_test_fails_make_test() -> anyhow::Result<()> {
    let dir = fixture(
        "/// ```\n/// assert_eq!(fixture::one(), 2);\n/// ```\npub fn one() -> u32 {\n    1\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn passes() {\n        assert_eq!(super::one(), 1);\n    }\n}\n",
    )?;
    let run = make_test(&dir, "unit-tests")?;
    assert!(
        !run.ok,
        "make test passed with a failing doc test:\n{}",
        run.output
    );
    assert!(run.output.contains("src/lib.rs - one"), "{}", run.output);
    assert!(
        run.output.contains("make test: FAILED: unit-tests"),
        "{}",
        run.output
    );
    Ok(())
}

#[test]
fn a_failing_step_fails_make_test_and_the_tests_still_run() -> anyhow::Result<()> {
    // Passing tests, but not formatted as `cargo fmt` would.
    let dir = fixture(&format!(
        "{PASSING_DOC_TEST}\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn passes() {{ assert_eq!(super::one(), 1); }}\n}}\n"
    ))?;
    let run = make_test(&dir, "fmt-check unit-tests")?;
    assert!(
        !run.ok,
        "make test passed with unformatted code:\n{}",
        run.output
    );
    assert!(
        run.output.contains("make test: FAILED: fmt-check"),
        "{}",
        run.output
    );
    assert!(
        !run.output.contains("FAILED: fmt-check unit-tests"),
        "{}",
        run.output
    );
    assert!(run.output.contains("==> make unit-tests"), "{}", run.output);
    Ok(())
}

#[test]
fn make_test_passes_when_everything_passes() -> anyhow::Result<()> {
    let dir = fixture(&format!(
        "{PASSING_DOC_TEST}\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn passes() {{\n        assert_eq!(super::one(), 1);\n    }}\n}}\n"
    ))?;
    let run = make_test(&dir, "fmt-check unit-tests")?;
    assert!(
        run.ok,
        "make test failed on a passing crate:\n{}",
        run.output
    );
    assert!(
        run.output
            .contains("make test: every step passed (fmt-check unit-tests)"),
        "{}",
        run.output
    );
    Ok(())
}
