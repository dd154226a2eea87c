//! A writer killed with SIGKILL at random moments leaves a valid repository whose head is a
//! complete commit, and cairn keeps reading and writing.

use std::os::unix::process::CommandExt;
use std::time::{Duration, SystemTime};

use crate::util::Env;

#[test]
fn sigkill_during_sets_never_corrupts() {
    let env = Env::new();
    let seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut stale_locks = 0;
    for round in 0..20 {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while :; do i=$((i+1)); \"$CAIRN\" set memory $((1024 + i % 1000)) hostname=r$i >/dev/null || exit 1; done")
            .env("CAIRN", crate::util::cairn_bin())
            .env("CAIRN_HOME", env.home())
            .process_group(0)
            .spawn()
            .expect("spawn the writer loop");
        std::thread::sleep(Duration::from_millis(15 + next() % 120));
        let pgid = child.id() as libc::pid_t;
        // SAFETY: killpg only sends a signal to the process group we created above.
        let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
        assert_eq!(rc, 0, "killpg: {}", std::io::Error::last_os_error());
        let _ = child.wait();
        if env.db().join("refs/heads/master.lock").exists() {
            stale_locks += 1;
        }
        env.fsck();
        let head = env.head();
        assert_eq!(env.git(&["cat-file", "-t", &head]).trim(), "commit");
        env.git(&["ls-tree", "-r", &head]);
        let memory = env.ok(&["get", "memory"]);
        assert!(memory.trim().parse::<u32>().is_ok(), "round {round}: memory {memory:?}");
        env.ok(&["set", "ncpu", if round % 2 == 0 { "1" } else { "2" }]);
    }
    eprintln!("{stale_locks} of 20 kills left a stale ref lock behind, which cairn removed");
    env.fsck();
}
