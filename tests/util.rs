//! Shared helpers: a temporary CAIRN_HOME, the real `cairn` binary, the git CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `cairn` binary cargo built for these tests (they are the cli package's).
pub fn cairn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Held by every test that boots a VM, for its whole length: two TCG guests on these 2-core
/// machines starve each other and the `cairn` commands the tests time (a burst of commits meant
/// to coalesce within the control plane's 1 s quiet window arrived seconds apart). The tests
/// without a VM still run alongside.
pub fn one_vm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static VM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    VM.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fixture script under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// A temporary data directory with an initialised database.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A fresh CAIRN_HOME with `cairn init` done.
    pub fn new() -> Env {
        let env = Env::empty();
        env.ok(&["init"]);
        env
    }

    /// A fresh CAIRN_HOME without a database. With CAIRN_TEST_KEEP set in the environment it
    /// is kept after the test, for its logs (the path is printed).
    pub fn empty() -> Env {
        let keep = std::env::var_os("CAIRN_TEST_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .disable_cleanup(keep)
            .tempdir()
            .expect("a temporary directory");
        if keep {
            eprintln!("CAIRN_HOME kept: {}", dir.path().join("home").display());
        }
        Env { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn db(&self) -> PathBuf {
        self.home().join("db")
    }

    /// The Docker CLI's configuration directory for this test.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// A directory searched first for the programs `cairn` runs.
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn path(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.bin()];
        dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        std::env::join_paths(dirs).unwrap_or_default()
    }

    /// A `cairn` command with this environment and no inherited CAIRN_* settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cairn_bin());
        cmd.args(args)
            .env("CAIRN_HOME", self.home())
            .env_remove("CAIRN_DB")
            // The Docker CLI's contexts (`cairn up` makes one) stay in the test's directory,
            // and a test may put a docker CLI of its own first on PATH (see [`Env::bin`]).
            .env("DOCKER_CONFIG", self.docker_config())
            .env("PATH", self.path())
            .env("NO_COLOR", "1")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Author")
            .env("GIT_COMMITTER_EMAIL", "author@example.com")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cairn runs")
    }

    /// Runs cairn, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(self.run(args), &format!("cairn {args:?}"))
    }

    /// Runs cairn, expects exit `code`, returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "cairn {args:?}: stderr {stderr}");
        stderr
    }

    /// Runs git in the database, expects success, returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.db(), args)
    }

    /// The commit master points at, by the git CLI.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "master"]).trim().to_owned()
    }

    /// `git fsck --strict` must be clean.
    pub fn fsck(&self) {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.db())
            .args(["fsck", "--strict", "--no-progress"])
            .output()
            .expect("git runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "git fsck --strict failed: {stderr}");
        assert!(!stderr.contains("error"), "git fsck reported: {stderr}");
    }

    /// Commits PATH=VALUE with git plumbing, as an outside tool would.
    pub fn git_set(&self, path: &str, value: &str) -> String {
        self.git_set_command(path, value, false)
    }

    /// A commit of master's tree with PATH=VALUE, made with plumbing; master does not move.
    pub fn git_commit_tree_with(&self, path: &str, value: &str) -> String {
        self.git_set_command(path, value, true)
    }

    fn git_set_command(&self, path: &str, value: &str, commit_only: bool) -> String {
        let out = Command::new("sh")
            .arg(fixture("git-set.sh"))
            .arg(self.db())
            .args([path, value])
            .env("GIT_AUTHOR_NAME", "Outsider")
            .env("GIT_AUTHOR_EMAIL", "out@example.com")
            .env("GIT_COMMITTER_NAME", "Outsider")
            .env("GIT_COMMITTER_EMAIL", "out@example.com")
            .env("GIT_SET_NO_UPDATE", if commit_only { "1" } else { "" })
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "git-set.sh: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The standard output of a command that must have succeeded (`what` names it in the panic).
pub fn succeeded(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs git with `--git-dir DIR`, expects success, returns stdout.
pub fn git_in(git_dir: &Path, args: &[&str]) -> String {
    let out =
        Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("git output is UTF-8")
}

/// A child process killed and reaped when the test ends, however it ends.
#[derive(Debug)]
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Env {
    /// `cairn serve --tcp 127.0.0.1:0` on this database: the server and the port it chose.
    pub fn serve_tcp(&self) -> (Killed, u16) {
        use std::io::{BufRead, BufReader};
        let mut serve = Killed(
            self.command(&["serve", "--tcp", "127.0.0.1:0"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("cairn serve starts"),
        );
        let mut lines = BufReader::new(serve.0.stdout.take().expect("stdout")).lines();
        for line in lines.by_ref() {
            let line = line.expect("cairn serve prints its listeners");
            if let Some(address) = line.strip_prefix("tcp ") {
                let port = address.rsplit(':').next().and_then(|p| p.parse().ok());
                // The rest of its output is drained, so that it never writes to a closed pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return (serve, port.expect("a port"));
            }
        }
        panic!("cairn serve printed no tcp listener");
    }
}
