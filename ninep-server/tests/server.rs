//! The server over a real unix socket, a real database, and the project's own client: what
//! DataKit's own suites covered.

mod common;

use std::time::Duration;

use cairn_9p::client::Client;
use cairn_9p::codec::Fcall;
use cairn_9p::errno::*;
use cairn_db::CONFIG_BRANCH;
use common::Server;
use tokio::net::UnixStream;

fn errno<T: std::fmt::Debug>(r: Result<T, cairn_9p::client::Error>) -> Errno {
    r.expect_err("an error").errno().expect("an errno")
}

#[tokio::test]
async fn layout_and_reads() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    assert_eq!(c.ls("").await.expect("ls /"), ["branch", "snapshots", "trees"]);
    assert_eq!(c.ls("branch").await.expect("ls"), ["master"]);
    assert_eq!(
        c.ls("branch/master").await.expect("ls"),
        ["fast-forward", "head", "head.live", "ro", "transactions", "watch"]
    );
    assert_eq!(
        String::from_utf8(c.cat("branch/master/head").await.expect("head")).expect("utf8"),
        format!("{}\n", s.head())
    );
    assert_eq!(
        c.ls("branch/master/ro").await.expect("ls ro"),
        [
            "auto-pause",
            "binfmt",
            "disk",
            "etc",
            "file-sharing",
            "filesystem",
            "hypervisor",
            "memory",
            "ncpu",
            "net",
            "network",
            "proxy",
            "schema-version"
        ]
    );
    assert_eq!(c.cat("branch/master/ro/memory").await.expect("cat"), b"2048\n");
    assert_eq!(c.cat("branch/master/ro/etc/hostname").await.expect("cat"), b"cairn\n");
    let head = s.head();
    assert_eq!(c.cat(&format!("snapshots/{head}/ro/ncpu")).await.expect("snapshot"), b"2\n");
    assert_eq!(
        c.cat(&format!("snapshots/{head}/hash")).await.expect("hash"),
        format!("{head}\n").as_bytes()
    );
    assert!(String::from_utf8_lossy(&c.cat(&format!("snapshots/{head}/msg")).await.expect("msg"))
        .starts_with("init: defaults"));
    assert_eq!(c.cat(&format!("snapshots/{head}/parents")).await.expect("parents"), b"");
    let blob =
        s.db.path_id(s.db.resolve(&head).expect("id"), "memory").expect("lookup").expect("exists");
    assert_eq!(c.cat(&format!("trees/{blob}")).await.expect("trees/H"), b"2048\n");
    // Errors: unknown paths, writes under ro/.
    assert_eq!(errno(c.walk("branch/nosuch").await), ENOENT);
    assert_eq!(errno(c.walk("branch/master/ro/nosuch").await), ENOENT);
    let fid = c.walk("branch/master/ro/memory").await.expect("walk");
    assert_eq!(errno(c.open(fid, 1).await), EROFS);
    assert_eq!(errno(c.mkdir("branch/master/ro", "x").await), EROFS);
}

async fn transaction(c: &mut Client<UnixStream>, branch: &str, name: &str) -> String {
    c.mkdir(&format!("branch/{branch}/transactions"), name).await.expect("mkdir transaction");
    format!("branch/{branch}/transactions/{name}")
}

#[tokio::test]
async fn transactions_commit_abort_refuse_and_conflict() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    let before = s.head();
    let t = transaction(&mut c, "master", "t1").await;
    assert_eq!(c.cat(&format!("{t}/rw/memory")).await.expect("snapshot of head"), b"2048\n");
    c.write_file(&format!("{t}/rw/memory"), b"4096\n").await.expect("write");
    c.write_file(&format!("{t}/msg"), b"more memory from 9P").await.expect("msg");
    assert_eq!(
        c.cat(&format!("{t}/parents")).await.expect("parents"),
        format!("{before}\n").as_bytes()
    );
    c.write_file(&format!("{t}/ctl"), b"commit\n").await.expect("commit");
    assert_eq!(s.db.read(CONFIG_BRANCH, "memory").expect("read"), Some(b"4096\n".to_vec()));
    let log = s.db.log(CONFIG_BRANCH, Some(1)).expect("log");
    assert_eq!(log[0].message, "more memory from 9P");
    assert_eq!(errno(c.walk(&t).await), ENOENT, "a committed transaction is gone");

    // Abort.
    let head = s.head();
    let t = transaction(&mut c, "master", "t2").await;
    c.write_file(&format!("{t}/rw/ncpu"), b"1\n").await.expect("write");
    c.write_file(&format!("{t}/ctl"), b"close").await.expect("close");
    assert_eq!(s.head(), head);

    // Refused by the schema: EINVAL, reason in ctl, nothing committed.
    let t = transaction(&mut c, "master", "t3").await;
    c.write_file(&format!("{t}/rw/memory"), b"lots\n").await.expect("write");
    assert_eq!(errno(c.write_file(&format!("{t}/ctl"), b"commit").await), EINVAL);
    let reason = String::from_utf8(c.cat(&format!("{t}/ctl")).await.expect("ctl")).expect("utf8");
    assert!(reason.contains("memory: \"lots\" is not a size in MiB"), "{reason}");
    assert_eq!(s.head(), head);
    c.write_file(&format!("{t}/ctl"), b"close").await.expect("close");

    // Conflict: two transactions change the same key.
    let a = transaction(&mut c, "master", "a").await;
    let b = transaction(&mut c, "master", "b").await;
    c.write_file(&format!("{a}/rw/memory"), b"1024\n").await.expect("write");
    c.write_file(&format!("{b}/rw/memory"), b"3072\n").await.expect("write");
    c.write_file(&format!("{b}/rw/etc/hostname"), b"b\n").await.expect("write");
    c.write_file(&format!("{a}/ctl"), b"commit").await.expect("first wins");
    assert_eq!(errno(c.write_file(&format!("{b}/ctl"), b"commit").await), EBUSY);
    let reason = String::from_utf8(c.cat(&format!("{b}/ctl")).await.expect("ctl")).expect("utf8");
    assert!(reason.contains("conflict on memory"), "{reason}");
    // Different keys re-apply on the new head, as the CLI does.
    let d = transaction(&mut c, "master", "d").await;
    let e = transaction(&mut c, "master", "e").await;
    c.write_file(&format!("{d}/rw/ncpu"), b"1\n").await.expect("write");
    c.write_file(&format!("{e}/rw/etc/hostname"), b"e\n").await.expect("write");
    c.write_file(&format!("{d}/ctl"), b"commit").await.expect("commit d");
    c.write_file(&format!("{e}/ctl"), b"commit").await.expect("commit e rebased");
    assert_eq!(s.db.read(CONFIG_BRANCH, "ncpu").expect("read"), Some(b"1\n".to_vec()));
    assert_eq!(s.db.read(CONFIG_BRANCH, "etc/hostname").expect("read"), Some(b"e\n".to_vec()));
}

#[tokio::test]
async fn working_tree_operations_and_big_files() {
    let s = Server::start().await;
    let mut c = s.client(8192).await;
    c.mkdir("branch", "scratch").await.expect("mkdir branch");
    assert_eq!(c.cat("branch/scratch/head").await.expect("head"), b"", "a new branch has no head");
    let t = transaction(&mut c, "scratch", "t").await;
    let big: Vec<u8> = (0..40_000u32).flat_map(|i| i.to_le_bytes()).collect();
    c.create(&format!("{t}/rw"), "big", &big).await.expect("create big");
    c.mkdir(&format!("{t}/rw"), "dir").await.expect("mkdir");
    c.create(&format!("{t}/rw/dir"), "a", b"aaaa").await.expect("create");
    // rename, truncate through setattr, unlink.
    let dir = c.walk(&format!("{t}/rw/dir")).await.expect("walk");
    c.rpc(Fcall::Trenameat {
        olddirfid: dir,
        oldname: b"a".to_vec(),
        newdirfid: dir,
        newname: b"b".to_vec(),
    })
    .await
    .expect("rename");
    c.clunk(dir).await.expect("clunk");
    let b = c.walk(&format!("{t}/rw/dir/b")).await.expect("renamed");
    c.rpc(Fcall::Tsetattr {
        fid: b,
        valid: 0x8,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 2,
        atime_sec: 0,
        atime_nsec: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
    })
    .await
    .expect("truncate");
    c.clunk(b).await.expect("clunk");
    c.create(&format!("{t}/rw"), "gone", b"x").await.expect("create");
    c.unlink(&format!("{t}/rw"), "gone", 0).await.expect("unlink");
    assert_eq!(errno(c.unlink(&format!("{t}/rw"), "dir", 0x200).await), ENOTEMPTY);
    c.write_file(&format!("{t}/ctl"), b"commit").await.expect("commit");
    assert_eq!(c.ls("branch/scratch/ro").await.expect("ls"), ["big", "dir"]);
    assert_eq!(c.cat("branch/scratch/ro/dir/b").await.expect("cat"), b"aa");
    let read = c.cat("branch/scratch/ro/big").await.expect("cat big");
    assert!(big.len() > 2 * 8192);
    assert_eq!(read, big, "a file of {} bytes through msize 8192", big.len());
    let (_, _, size) = c.stat("branch/scratch/ro/big").await.expect("stat");
    assert_eq!(size, big.len() as u64);
    // rmdir of the branch deletes it.
    c.unlink("branch", "scratch", 0x200).await.expect("rmdir branch");
    assert_eq!(c.ls("branch").await.expect("ls"), ["master"]);
    assert_eq!(errno(c.unlink("branch", "master", 0x200).await), EPERM);
}

#[tokio::test]
async fn qids_are_stable_per_path_and_versioned_by_content() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    let (host1, _, _) = c.stat("branch/master/ro/etc/hostname").await.expect("stat");
    let (mem1, _, _) = c.stat("branch/master/ro/memory").await.expect("stat");
    let mut tx = s.db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_key("memory", b"4096").expect("valid");
    tx.commit().expect("commit");
    let (host2, _, _) = c.stat("branch/master/ro/etc/hostname").await.expect("stat");
    let (mem2, _, _) = c.stat("branch/master/ro/memory").await.expect("stat");
    assert_eq!(host1, host2, "unchanged object: same qid");
    assert_eq!(mem1.path, mem2.path, "same path: same inode");
    assert_ne!(mem1.version, mem2.version, "new content: new version");
    let (ncpu, _, _) = c.stat("branch/master/ro/ncpu").await.expect("stat");
    assert_ne!(ncpu.path, mem2.path);
    // readdir gives every entry the qid that walking to it gives.
    for dir in ["branch/master/ro", "branch/master/ro/etc", "branch/master", ""] {
        for (name, qid) in c.readdir(dir).await.expect("readdir") {
            let path = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
            let (walked, _, _) = c.stat(&path).await.expect("stat");
            assert_eq!(qid, walked, "{path}");
        }
    }
}

#[tokio::test]
async fn streams_deliver_changes_and_flush_cancels_a_blocked_read() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    let live = c.walk("branch/master/head.live").await.expect("walk");
    c.open(live, 0).await.expect("open");
    assert_eq!(
        c.read_at(live, 0).await.expect("first value"),
        format!("{}\n", s.head()).as_bytes()
    );
    assert_eq!(c.read_at(live, 41).await.expect("then empty"), b"");
    let watch = c.walk("branch/master/watch/memory.node/tree.live").await.expect("walk");
    c.open(watch, 0).await.expect("open");
    let first = c.read_at(watch, 0).await.expect("value");
    assert_eq!(first.len(), 41);
    assert_eq!(c.read_at(watch, 41).await.expect("empty"), b"");
    // A read that blocks until the next commit; meanwhile other requests are answered.
    let blocked = c.send(Fcall::Tread { fid: live, offset: 41, count: 4096 }).await.expect("send");
    assert_eq!(c.cat("branch/master/ro/memory").await.expect("not stalled"), b"2048\n");
    let db = s.db.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
        tx.set_key("memory", b"1024").expect("valid");
        tx.commit().expect("commit");
    });
    let Fcall::Rread { data } = c.wait(blocked).await.expect("delivered") else {
        panic!("not an Rread")
    };
    assert_eq!(data, format!("{}\n", s.head()).as_bytes());
    let changed = c.read_at(watch, 0).await.expect("tree.live moved");
    assert_ne!(changed, first);
    // Flush a read blocked on a stream.
    c.read_at(live, 0).await.expect("empty read after the value");
    let blocked = c.send(Fcall::Tread { fid: live, offset: 0, count: 4096 }).await.expect("send");
    let flush = c.send(Fcall::Tflush { oldtag: blocked }).await.expect("flush");
    assert_eq!(c.wait(flush).await.expect("Rflush"), Fcall::Rflush {});
    assert_eq!(
        c.cat("branch/master/head").await.expect("still serving"),
        format!("{}\n", s.head()).as_bytes()
    );
}

#[tokio::test]
async fn merge_with_conflicts_then_resolve() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    c.mkdir("branch", "other").await.expect("branch");
    c.write_file("branch/other/fast-forward", format!("{}\n", s.head()).as_bytes())
        .await
        .expect("ff");
    assert_eq!(
        c.cat("branch/other/head").await.expect("head"),
        format!("{}\n", s.head()).as_bytes()
    );
    // Diverge: master and other both change hostname, other also changes memory.
    let t = transaction(&mut c, "other", "x").await;
    c.write_file(&format!("{t}/rw/etc/hostname"), b"theirs\n").await.expect("write");
    c.write_file(&format!("{t}/rw/memory"), b"1024\n").await.expect("write");
    c.write_file(&format!("{t}/ctl"), b"commit").await.expect("commit other");
    let theirs = String::from_utf8(c.cat("branch/other/head").await.expect("head")).expect("utf8");
    let t = transaction(&mut c, "master", "m").await;
    c.write_file(&format!("{t}/rw/etc/hostname"), b"ours\n").await.expect("write");
    c.write_file(&format!("{t}/merge"), theirs.as_bytes()).await.expect("merge");
    assert_eq!(c.cat(&format!("{t}/conflicts")).await.expect("conflicts"), b"etc/hostname\n");
    assert_eq!(c.cat(&format!("{t}/rw/memory")).await.expect("merged"), b"1024\n");
    assert_eq!(c.cat(&format!("{t}/theirs/etc/hostname")).await.expect("theirs"), b"theirs\n");
    assert_eq!(c.cat(&format!("{t}/ours/etc/hostname")).await.expect("ours"), b"ours\n");
    assert_eq!(c.cat(&format!("{t}/base/etc/hostname")).await.expect("base"), b"cairn\n");
    assert_eq!(errno(c.write_file(&format!("{t}/ctl"), b"commit").await), EBUSY, "conflicts first");
    c.write_file(&format!("{t}/rw/etc/hostname"), b"resolved\n").await.expect("resolve");
    c.write_file(&format!("{t}/ctl"), b"commit").await.expect("commit merge");
    let head = s.db.head(CONFIG_BRANCH).expect("head").expect("exists");
    let info = s.db.commit_info(head).expect("info");
    assert_eq!(info.parents.len(), 2, "a merge commit");
    assert_eq!(info.parents[1].to_string(), theirs.trim());
    assert_eq!(
        s.db.read(CONFIG_BRANCH, "etc/hostname").expect("read"),
        Some(b"resolved\n".to_vec())
    );
}

#[tokio::test]
async fn garbage_drops_only_its_own_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start().await;
    let mut good = s.client(65536).await;
    for garbage in
        [&[0xffu8, 0xff, 0xff, 0x7f, 1, 2, 3][..], &[9, 0, 0, 0, 99, 0, 0, 0, 0], &[3, 0, 0, 0]]
    {
        let mut bad = UnixStream::connect(s.dir.path().join("9p.sock")).await.expect("connect");
        bad.write_all(garbage).await.expect("send garbage");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .expect("closed in time");
        match n {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the server should hang up, got {other:?}"),
        }
    }
    assert_eq!(good.cat("branch/master/ro/memory").await.expect("unaffected"), b"2048\n");
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_stops_being_read() {
    use cairn_9p::{Dialect, Frame};
    use tokio::io::AsyncWriteExt;
    let s = Server::start().await;
    let mut good = s.client(65536).await;
    let mut greedy = UnixStream::connect(s.dir.path().join("9p.sock")).await.expect("connect");
    let version = Fcall::Tversion { msize: 65536, version: b"9P2000.L".to_vec() };
    greedy
        .write_all(&Frame { tag: 0xffff, fcall: version }.encode(Dialect::L))
        .await
        .expect("send");
    // Requests the server answers at once (clunk of an unknown fid), never reading a reply.
    let mut burst = Vec::new();
    for tag in 0..4096u16 {
        burst.extend(Frame { tag, fcall: Fcall::Tclunk { fid: 7 } }.encode(Dialect::L));
    }
    let mut sent = 0usize;
    let stalled = loop {
        match tokio::time::timeout(Duration::from_secs(2), greedy.write_all(&burst)).await {
            Err(_) => break true,
            Ok(written) => written.expect("the server keeps the connection"),
        }
        sent += burst.len();
        if sent > 256 << 20 {
            break false;
        }
    };
    assert!(stalled, "the server read {sent} bytes of requests whose replies nobody read");
    // Everybody else is served as usual meanwhile.
    assert_eq!(good.cat("branch/master/ro/memory").await.expect("unaffected"), b"2048\n");
}

#[tokio::test]
async fn reads_follow_refs_moved_by_the_git_cli_at_once() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    let first = s.head();
    let mut tx = s.db.transaction(CONFIG_BRANCH).expect("tx");
    tx.set_key("memory", b"4096").expect("valid");
    let second = tx.commit().expect("commit").id.to_string();
    let git_dir = s.dir.path().join("db");
    // The ref flips between two commits as fast as git can move it; every read sees the move.
    for round in 0..40 {
        let (to, memory) = if round % 2 == 0 { (&first, "2048\n") } else { (&second, "4096\n") };
        let moved = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&git_dir)
            .args(["update-ref", "refs/heads/master", to])
            .status()
            .expect("git runs");
        assert!(moved.success());
        let read = c.cat("branch/master/ro/memory").await.expect("read");
        assert_eq!(String::from_utf8_lossy(&read), memory, "round {round}");
    }
}

/// The entry point the VMM's virtio-9p device uses: whole request frames in, whole reply frames
/// out on a channel, no socket. The caller returns a credit per reply it delivers.
#[tokio::test]
async fn message_in_message_out_without_a_transport() {
    use cairn_9p::{Dialect, Frame, Session};
    let s = Server::start().await;
    let (replies, mut out) = tokio::sync::mpsc::unbounded_channel();
    let session = Session::new(std::sync::Arc::new(cairn_9p::Fs::new(s.db.clone())), replies);
    let credits = session.credits();
    let call = |tag: u16, fcall: Fcall| {
        session.dispatch(&Frame { tag, fcall }.encode(Dialect::L)).expect("a valid frame");
    };
    call(0xffff, Fcall::Tversion { msize: 8192, version: b"9P2000.L".to_vec() });
    let attach = Fcall::Tattach {
        fid: 0,
        afid: u32::MAX,
        uname: b"guest".to_vec(),
        aname: b"db".to_vec(),
        n_uname: 0,
    };
    call(1, attach);
    let names = ["branch", "master", "ro", "memory"].map(|n| n.as_bytes().to_vec()).to_vec();
    call(2, Fcall::Twalk { fid: 0, newfid: 1, names });
    call(3, Fcall::Tlopen { fid: 1, flags: 0 });
    call(4, Fcall::Tread { fid: 1, offset: 0, count: 4096 });
    let mut got = Vec::new();
    while got.len() < 5 {
        let frame = tokio::time::timeout(Duration::from_secs(5), out.recv())
            .await
            .expect("a reply in time")
            .expect("the session is alive");
        credits.delivered();
        got.push(Frame::decode(&frame, Dialect::L).expect("a valid reply"));
    }
    assert!(matches!(&got[0].fcall, Fcall::Rversion { msize: 8192, .. }), "{:?}", got[0]);
    assert!(matches!(&got[2].fcall, Fcall::Rwalk { qids } if qids.len() == 4), "{:?}", got[2]);
    assert_eq!(got[4].tag, 4);
    assert_eq!(got[4].fcall, Fcall::Rread { data: b"2048\n".to_vec() });
}
