//! Stamps the build with its commit for `fanout_build_info`: `FANOUT_COMMIT` from the build's
//! environment if set (a packager building outside a checkout), else `git rev-parse --short
//! HEAD`, else `unknown`. Runs again only when HEAD or the branch it names moves.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FANOUT_COMMIT");
    let commit = std::env::var("FANOUT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=FANOUT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    watch_head();
}

/// `git rev-parse --short HEAD`, if git and a checkout are there.
fn git_commit() -> Option<String> {
    let out = git(&["rev-parse", "--short", "HEAD"])?;
    // Only what a label value may hold unescaped.
    out.chars().all(|c| c.is_ascii_hexdigit()).then_some(out)
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    output.status.success().then(|| text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout), the branch it names (a commit)
/// and packed refs. Only existing files are named: cargo reruns every build for a missing one.
fn watch_head() {
    let (Some(git_dir), Some(common_dir)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"]))
    else {
        return;
    };
    let mut watched = vec![Path::new(&git_dir).join("HEAD"), Path::new(&common_dir).join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(Path::new(&common_dir).join(branch));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
