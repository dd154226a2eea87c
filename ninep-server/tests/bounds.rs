//! What a careless or hostile client cannot do to the server: write refs git refuses, fill its
//! memory with transactions or fids, race two transactions into one name, commit a path git
//! cannot store, or talk before Tversion.

mod common;

use cairn_9p::codec::{Dialect, Fcall, Frame, NOFID};
use cairn_9p::errno::*;
use cairn_9p::fs::txn::MAX_FILE;
use cairn_9p::fs::txns::{MAX_TXNS_PER_CONNECTION, MAX_TXN_BYTES};
use cairn_db::CONFIG_BRANCH;
use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn errno<T: std::fmt::Debug>(r: Result<T, cairn_9p::client::Error>) -> Errno {
    r.expect_err("an error").errno().expect("an errno")
}

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git").arg("--git-dir").arg(dir).args(args).output().expect("git")
}

#[tokio::test]
async fn branch_names_git_refuses_are_refused() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    for bad in
        ["a b", "a..b", "x~1", "x^", "x:y", "x?", "x*", "x[", "x\\y", "x.", "@", "x@{1}", "HEAD"]
    {
        assert_eq!(errno(c.mkdir("branch", bad).await), EINVAL, "{bad:?}");
    }
    c.mkdir("branch", "fine-1.0").await.expect("a good name");
    let t = "branch/fine-1.0/transactions";
    c.mkdir(t, "t").await.expect("transaction");
    c.create(&format!("{t}/t/rw"), "f", b"x").await.expect("create");
    c.write_file(&format!("{t}/t/ctl"), b"commit").await.expect("commit");
    let fsck = git(&s.dir.path().join("db"), &["fsck", "--strict"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
}

#[tokio::test]
async fn racing_mkdirs_of_one_transaction_make_one() {
    let s = Server::start().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = s.client(65536).await;
        tasks.push(tokio::spawn(async move {
            let made = c.mkdir("branch/master/transactions", "same").await;
            // The client stays connected: its transaction lives as long as it does.
            (made.map(drop).map_err(|e| e.errno()), c)
        }));
    }
    let mut made = 0;
    let mut clients = Vec::new();
    for task in tasks {
        let (result, client) = task.await.expect("joins");
        clients.push(client);
        match result {
            Ok(()) => made += 1,
            Err(e) => assert_eq!(e, Some(EEXIST)),
        }
    }
    assert_eq!(made, 1);
}

#[tokio::test]
async fn transactions_are_bounded_and_go_with_their_connection() {
    let s = Server::start().await;
    let mut c = s.client(1 << 20).await;
    for i in 0..MAX_TXNS_PER_CONNECTION {
        c.mkdir("branch/master/transactions", &format!("t{i}")).await.expect("within the bound");
    }
    assert_eq!(errno(c.mkdir("branch/master/transactions", "one-more").await), ENOSPC);
    // A file past the bound of one file.
    let big = vec![7u8; MAX_FILE + 1];
    assert_eq!(errno(c.create("branch/master/transactions/t0/rw", "big", &big).await), EFBIG);
    // The connection goes: so do its transactions.
    drop(c);
    let mut other = s.client(65536).await;
    let mut gone = false;
    for _ in 0..100 {
        if other.ls("branch/master/transactions").await.expect("ls").is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the transactions of a closed connection are gone");
    // Many connections' transactions together stay within the total.
    let mut clients = Vec::new();
    let mut stored = 0usize;
    let chunk = vec![1u8; MAX_FILE];
    'fill: for n in 0.. {
        let mut c = s.client(1 << 20).await;
        c.mkdir("branch/master/transactions", &format!("c{n}")).await.expect("mkdir");
        for f in 0..4 {
            let dir = format!("branch/master/transactions/c{n}/rw");
            match c.create(&dir, &format!("f{f}"), &chunk).await {
                Ok(()) => stored += chunk.len(),
                Err(e) => {
                    assert!(matches!(e.errno(), Some(ENOSPC) | Some(EFBIG)), "{e}");
                    if e.errno() == Some(ENOSPC) {
                        clients.push(c);
                        break 'fill;
                    }
                }
            }
        }
        clients.push(c);
        assert!(n < 64, "no bound reached");
    }
    assert!(stored <= MAX_TXN_BYTES, "{stored} bytes held");
}

#[tokio::test]
async fn the_base_tree_is_shared_not_copied() {
    let s = Server::start().await;
    // A 1 MB value on a branch of its own, then 60 transactions of it.
    let mut tx = s.db.transaction("big").expect("tx");
    tx.set_path("value", vec![5u8; 1 << 20]);
    tx.commit().expect("commit");
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = s.client(65536).await;
        for j in 0..10 {
            c.mkdir("branch/big/transactions", &format!("t{i}-{j}")).await.expect("mkdir");
        }
        clients.push(c);
    }
    // 60 copies would be 60 MB; shared, the tree is held once.
    let held = s.fs.transaction_memory();
    assert!(held < 2 << 20, "60 transactions of a 1 MB tree hold {held} bytes");
}

#[tokio::test]
async fn paths_git_cannot_store_and_links_at_keys_are_refused() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    c.mkdir("branch/master/transactions", "t").await.expect("mkdir");
    let rw = "branch/master/transactions/t/rw";
    assert_eq!(errno(c.create(rw, "a\0b", b"x").await), EINVAL);
    assert_eq!(errno(c.mkdir(rw, ".git").await), EINVAL);
    assert_eq!(errno(c.mkdir("branch/master/transactions", "x\0y").await), EINVAL);
    // A symbolic link where a key lives: the commit is refused, the reason in ctl.
    c.unlink(&format!("{rw}/etc"), "hostname", 0).await.expect("unlink");
    let dir = c.walk(&format!("{rw}/etc")).await.expect("walk");
    let link = Fcall::Tsymlink {
        fid: dir,
        name: b"hostname".to_vec(),
        target: b"/etc/shadow".to_vec(),
        gid: 0,
    };
    c.rpc(link).await.expect("symlink");
    let head = s.head();
    assert_eq!(errno(c.write_file("branch/master/transactions/t/ctl", b"commit").await), EINVAL);
    let why = String::from_utf8(c.cat("branch/master/transactions/t/ctl").await.expect("ctl"))
        .expect("utf8");
    assert!(why.contains("hostname") && why.contains("symbolic link"), "{why}");
    assert_eq!(s.head(), head);
    assert_eq!(s.db.read(CONFIG_BRANCH, "etc/hostname").expect("read"), Some(b"cairn\n".to_vec()));
}

#[tokio::test]
async fn nothing_is_answered_before_tversion() {
    let s = Server::start().await;
    let mut stream = UnixStream::connect(s.dir.path().join("9p.sock")).await.expect("connect");
    let attach = Fcall::Tattach {
        fid: 0,
        afid: NOFID,
        uname: b"root".to_vec(),
        aname: Vec::new(),
        n_uname: 0,
    };
    stream.write_all(&Frame { tag: 1, fcall: attach }.encode(Dialect::L)).await.expect("send");
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.expect("a reply");
    let mut bytes = vec![0u8; Frame::size(prefix, 1 << 20).expect("size")];
    bytes[..4].copy_from_slice(&prefix);
    stream.read_exact(&mut bytes[4..]).await.expect("a reply");
    let reply = Frame::decode(&bytes, Dialect::L).expect("decodes");
    assert_eq!(reply.fcall, Fcall::Rlerror { ecode: EPROTO.wire() });
}

#[tokio::test]
async fn fids_per_connection_are_bounded() {
    let s = Server::start().await;
    let mut c = s.client(65536).await;
    let limit = cairn_9p::session::MAX_FIDS;
    let mut last = Ok(());
    // Pipelined walks: the attach holds one fid already.
    let mut tags = Vec::new();
    for fid in 1..=limit as u32 {
        tags.push(
            c.send(Fcall::Twalk { fid: 0, newfid: fid, names: Vec::new() }).await.expect("send"),
        );
        if tags.len() == 200 {
            for tag in tags.drain(..) {
                last = c.wait(tag).await.map(drop).map_err(|e| e.errno());
            }
        }
    }
    for tag in tags.drain(..) {
        last = c.wait(tag).await.map(drop).map_err(|e| e.errno());
    }
    assert_eq!(last, Err(Some(EMFILE)), "the last walk is one fid too many");
}
