//! Building what runs inside L1: moatvm (release) and the e2e test binary.

use crate::cmd;
use crate::paths;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// `cargo build --release -p moatvm`; returns the binary's path.
pub fn moatvm() -> Result<PathBuf> {
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "moatvm"]))?;
    let bin = paths::target().join("release/moatvm");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// Like [`moatvm`], but a failed build is reported and yields a path that
/// does not exist: the lab still runs (QEMU's scenarios say whether the lab
/// works) and every moatvm test fails, loudly, instead of using a stale
/// binary.
pub fn moatvm_or_missing() -> PathBuf {
    match moatvm() {
        Ok(bin) => bin,
        Err(e) => {
            println!("lab: WARNING: moatvm did not build ({e:#}); its tests will fail");
            paths::target().join("release/moatvm-did-not-build")
        }
    }
}

/// Builds the e2e crate's test binary; returns its path (from cargo's
/// JSON messages).
pub fn e2e_tests() -> Result<PathBuf> {
    eprintln!("$ cargo test -p e2e --no-run");
    let out = cmd::output(cmd::cargo().args([
        "test",
        "-p",
        "e2e",
        "--lib",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]))?;
    out.lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(r#""name":"e2e""#) && l.contains(r#""test":true"#))
        .find_map(|l| json_string(l, "executable"))
        .map(PathBuf::from)
        .context("cargo reported no e2e test executable")
}

/// The string value of `"key":"..."` in a line of JSON (cargo escapes
/// nothing in plain paths).
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

/// Lists the ignored (lab-only) tests of the e2e binary, running it on the
/// host with `--list`.
pub fn lab_tests(e2e: &std::path::Path) -> Result<Vec<String>> {
    let out = cmd::output(std::process::Command::new(e2e).args([
        "--list",
        "--ignored",
        "--format",
        "terse",
    ]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_json_string() {
        let line =
            r#"{"reason":"compiler-artifact","executable":"/t/debug/deps/e2e-1","fresh":true}"#;
        assert_eq!(
            super::json_string(line, "executable").as_deref(),
            Some("/t/debug/deps/e2e-1")
        );
        assert_eq!(super::json_string(line, "nope"), None);
    }
}
