//! Helpers for the unit tests: real bare repositories in temp dirs, made and inspected with the
//! git CLI, so that what the tests check is what git itself sees.

use std::path::Path;
use std::process::Command;

use gix::ObjectId;

/// Runs git on the repository at `git_dir` with a fixed identity and no user or system
/// configuration; returns its output, trimmed. Panics when git fails.
pub(crate) fn git(git_dir: &Path, args: &[&str]) -> String {
    git_with_input(git_dir, args, b"")
}

/// [`git`] with `input` on its standard input.
pub(crate) fn git_with_input(git_dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child.stdin.take().expect("stdin is piped").write_all(input).expect("git reads its input");
    let out = child.wait_with_output().expect("git finishes");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A new bare repository in a temp dir (kept alive by the returned guard), opened with gix.
pub(crate) fn bare_repo() -> (tempfile::TempDir, gix::Repository) {
    let dir = tempfile::tempdir().expect("tempdir");
    let git_dir = dir.path().join("repo.git");
    let out = Command::new("git")
        .args(["init", "--bare", "--quiet"])
        .arg(&git_dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git init: {}", String::from_utf8_lossy(&out.stderr));
    let repo = gix::open(&git_dir).expect("gix opens what git made");
    (dir, repo)
}

/// A new commit of the empty tree with `message` (distinct messages, distinct commits).
pub(crate) fn commit(git_dir: &Path, message: &str) -> ObjectId {
    let tree = git_with_input(git_dir, &["hash-object", "-w", "-t", "tree", "--stdin"], b"");
    id(&git(git_dir, &["commit-tree", &tree, "-m", message]))
}

/// A new loose blob holding `content`.
pub(crate) fn blob(git_dir: &Path, content: &str) -> ObjectId {
    id(&git_with_input(git_dir, &["hash-object", "-w", "--stdin"], content.as_bytes()))
}

/// What `git rev-parse` says `rev` is, or `None` when git knows no such ref.
pub(crate) fn rev_parse(git_dir: &Path, rev: &str) -> Option<ObjectId> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["rev-parse", "--verify", "--quiet", rev])
        .output()
        .expect("git runs");
    out.status.success().then(|| id(String::from_utf8_lossy(&out.stdout).trim()))
}

/// An object id from git's hex output.
pub(crate) fn id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.as_bytes()).expect("git prints full hex ids")
}
