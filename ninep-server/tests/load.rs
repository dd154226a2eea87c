//! Load: 32 clients reading and committing at once for a few seconds. Every commit the server
//! acknowledged is in master's history with its value, and git finds the repository sound.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_9p::errno::EBUSY;
use cairn_db::CONFIG_BRANCH;
use common::Server;

const CLIENTS: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(4);

/// The keys the clients fight over, four clients per key: same-key races must conflict cleanly
/// and other-key races must be rebased, never lost. Every value is new, so that every
/// acknowledged commit changes something (a commit that changes nothing makes no commit).
fn change(client: usize, round: usize) -> (&'static str, String) {
    let id = client * 10_000 + round;
    match client % 8 {
        0 => ("etc/hostname", format!("c{client}-{round}")),
        1 => ("memory", format!("{}", 1024 + id % 7000)),
        2 => ("proxy/http", format!("http://p{id}.example:3128")),
        3 => ("proxy/https", format!("http://p{id}.example:3129")),
        4 => ("proxy/exclude", format!("e{id}.example")),
        5 => ("net/mtu", format!("{}", 1280 + id % 7000)),
        6 => ("net/dns", format!("10.{client}.{}.{}", round / 256 % 256, round % 256)),
        _ => ("etc/sysctl.conf", format!("vm.max_map_count={}", 65530 + id)),
    }
}

/// What one client got acknowledged: commit message -> (key, value).
type Acked = Vec<(String, &'static str, String)>;

async fn client(server: &Server, number: usize) -> (Acked, usize) {
    let mut c = server.client(65536).await;
    let (mut acked, mut conflicts) = (Vec::new(), 0);
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < RUN_FOR {
        round += 1;
        // Readers and writers interleave on the same connection and across connections.
        c.cat("branch/master/ro/memory").await.expect("read a key");
        c.ls("branch/master/ro").await.expect("list the tree");
        let name = format!("c{number}-{round}");
        let t = format!("branch/master/transactions/{name}");
        c.mkdir("branch/master/transactions", &name).await.expect("start a transaction");
        let (key, value) = change(number, round);
        c.write_file(&format!("{t}/rw/{key}"), format!("{value}\n").as_bytes())
            .await
            .expect("stage");
        let message = format!("load client {number} round {round}");
        c.write_file(&format!("{t}/msg"), message.as_bytes()).await.expect("message");
        match c.write_file(&format!("{t}/ctl"), b"commit").await {
            Ok(()) => acked.push((message, key, value)),
            Err(e) if e.errno() == Some(EBUSY) => {
                conflicts += 1;
                c.write_file(&format!("{t}/ctl"), b"close").await.expect("abort after a conflict");
            }
            Err(e) => panic!("client {number} round {round}: {e}"),
        }
    }
    (acked, conflicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_read_and_commit_and_nothing_acknowledged_is_lost() {
    let server = std::sync::Arc::new(Server::start().await);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let server = server.clone();
            tokio::spawn(async move { client(&server, n).await })
        })
        .collect();
    let (mut acked, mut conflicts) = (Vec::new(), 0);
    for task in tasks {
        let (a, c) = task.await.expect("client task");
        acked.extend(a);
        conflicts += c;
    }
    assert!(acked.len() >= CLIENTS, "only {} commits in {RUN_FOR:?}", acked.len());

    let repo = server.dir.path().join("db");
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(&repo).args(args).output().expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let history: HashMap<String, String> = git(&["log", "--format=%H %s", CONFIG_BRANCH])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, subject)| (subject.to_owned(), id.to_owned()))
        .collect();
    for (message, key, value) in &acked {
        let commit =
            history.get(message).unwrap_or_else(|| panic!("{message:?} is not in history"));
        let stored = git(&["show", &format!("{commit}:{key}")]);
        assert_eq!(stored.trim_end(), value, "{key} in {message:?}");
    }
    git(&["fsck", "--strict", "--no-dangling"]);
    eprintln!("{} commits acknowledged, {conflicts} conflicts refused", acked.len());
    assert_eq!(server.head(), history[&acked_last(&git)]);
}

/// The subject of master's head commit.
fn acked_last(git: &dyn Fn(&[&str]) -> String) -> String {
    git(&["log", "-1", "--format=%s", CONFIG_BRANCH]).trim_end().to_owned()
}
