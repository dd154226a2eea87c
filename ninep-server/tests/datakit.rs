//! DataKit's own clients against cairn: go-datakit (the library Docker for Mac's components
//! read com.docker.db with) speaks plain 9P2000 through go-p9p. These tests send the requests
//! it sends, frame by frame in that dialect, and expect DataKit's server's answers: a failed
//! walk is an error (never a partial Rwalk), named in DataKit's words, and a create over an
//! existing file empties it.

mod common;

use cairn_9p::codec::{Dialect, Fcall, Frame, NOFID, NOTAG};
use cairn_db::CONFIG_BRANCH;
use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A plain 9P2000 connection, as go-p9p makes it.
struct Plain {
    stream: UnixStream,
    tag: u16,
}

impl Plain {
    async fn connect(s: &Server) -> Plain {
        let stream = UnixStream::connect(s.dir.path().join("9p.sock")).await.expect("connect");
        let mut c = Plain { stream, tag: 0 };
        let version =
            c.call_tag(NOTAG, Fcall::Tversion { msize: 8192, version: b"9P2000".to_vec() });
        assert!(matches!(version.await, Fcall::Rversion { version, .. } if version == b"9P2000"));
        let attach = Fcall::Tattach {
            fid: 0,
            afid: NOFID,
            uname: b"root".to_vec(),
            aname: Vec::new(),
            n_uname: 0,
        };
        assert!(matches!(c.call(attach).await, Fcall::Rattach { .. }));
        c
    }

    async fn call_tag(&mut self, tag: u16, fcall: Fcall) -> Fcall {
        self.stream.write_all(&Frame { tag, fcall }.encode(Dialect::Plain)).await.expect("send");
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).await.expect("reply");
        let size = Frame::size(prefix, 1 << 20).expect("size");
        let mut bytes = vec![0u8; size];
        bytes[..4].copy_from_slice(&prefix);
        self.stream.read_exact(&mut bytes[4..]).await.expect("reply");
        let frame = Frame::decode(&bytes, Dialect::Plain).expect("decodes");
        assert_eq!(frame.tag, tag);
        frame.fcall
    }

    async fn call(&mut self, fcall: Fcall) -> Fcall {
        self.tag += 1;
        let tag = self.tag;
        self.call_tag(tag, fcall).await
    }

    /// go-datakit's walk: clone the root to `fid`, then walk `fid` onto itself.
    async fn walk(&mut self, fid: u32, path: &[&str]) -> Fcall {
        let cloned = self.call(Fcall::Twalk { fid: 0, newfid: fid, names: Vec::new() }).await;
        assert!(matches!(cloned, Fcall::Rwalk { .. }), "{cloned:?}");
        let names = path.iter().map(|n| n.as_bytes().to_vec()).collect();
        self.call(Fcall::Twalk { fid, newfid: fid, names }).await
    }
}

fn ename(reply: &Fcall) -> String {
    match reply {
        Fcall::Rerror { ename, .. } => String::from_utf8_lossy(ename).into_owned(),
        other => panic!("expected an Rerror, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_walk_is_an_error_and_leaves_the_fid_alone() {
    let s = Server::start().await;
    let mut c = Plain::connect(&s).await;
    // The first name and a later one: both an error, in the words go-datakit compares.
    let first = c.walk(1, &["nosuch"]).await;
    assert_eq!(ename(&first), "No such file or directory");
    let later = c.walk(2, &["branch", "master", "ro", "does-not-exist"]).await;
    assert_eq!(ename(&later), "No such file or directory");
    // Through a file, DataKit's own message.
    let through = c.walk(3, &["branch", "master", "ro", "memory", "x"]).await;
    assert_eq!(ename(&through), "Can't walk from a file");
    // The fid stayed at the root: a stat of it is the root's, and removing it is refused (the
    // request go-datakit's Remove would have sent after a partial walk hit the wrong node).
    let stat = c.call(Fcall::Tstat { fid: 2 }).await;
    assert!(matches!(&stat, Fcall::Rstat { stat } if stat.name == b"/"), "{stat:?}");
    // A walk of several names succeeds whole.
    let whole = c.walk(4, &["branch", "master", "ro", "memory"]).await;
    assert!(matches!(whole, Fcall::Rwalk { qids } if qids.len() == 4));
}

#[tokio::test]
async fn writing_an_existing_key_by_create_replaces_it() {
    let s = Server::start().await;
    let mut c = Plain::connect(&s).await;
    // go-datakit's Transaction: mkdir transactions/T, then Create over rw/memory, write, commit.
    assert!(matches!(c.walk(1, &["branch", "master", "transactions"]).await, Fcall::Rwalk { .. }));
    let made = c
        .call(Fcall::Tcreate {
            fid: 1,
            name: b"t1".to_vec(),
            perm: 0x8000_0755,
            mode: 0,
            extension: Vec::new(),
        })
        .await;
    assert!(matches!(made, Fcall::Rcreate { .. }), "{made:?}");
    assert!(matches!(
        c.walk(2, &["branch", "master", "transactions", "t1", "rw"]).await,
        Fcall::Rwalk { .. }
    ));
    let created = c
        .call(Fcall::Tcreate {
            fid: 2,
            name: b"memory".to_vec(),
            perm: 0o644,
            mode: 2,
            extension: Vec::new(),
        })
        .await;
    assert!(
        matches!(created, Fcall::Rcreate { .. }),
        "a create over an existing file: {created:?}"
    );
    // It is empty now, and open: the value is written from offset 0.
    let read = c.call(Fcall::Tread { fid: 2, offset: 0, count: 100 }).await;
    assert_eq!(read, Fcall::Rread { data: Vec::new() });
    let wrote = c.call(Fcall::Twrite { fid: 2, offset: 0, data: b"4096\n".to_vec() }).await;
    assert!(matches!(wrote, Fcall::Rwrite { count: 5 }), "{wrote:?}");
    c.call(Fcall::Tclunk { fid: 2 }).await;
    assert!(matches!(
        c.walk(3, &["branch", "master", "transactions", "t1", "ctl"]).await,
        Fcall::Rwalk { .. }
    ));
    assert!(matches!(c.call(Fcall::Topen { fid: 3, mode: 1 }).await, Fcall::Ropen { .. }));
    let commit = c.call(Fcall::Twrite { fid: 3, offset: 0, data: b"commit".to_vec() }).await;
    assert!(matches!(commit, Fcall::Rwrite { .. }), "{commit:?}");
    assert_eq!(s.db.read(CONFIG_BRANCH, "memory").expect("read"), Some(b"4096\n".to_vec()));
}

#[tokio::test]
async fn remove_of_a_missing_path_is_no_such_file() {
    let s = Server::start().await;
    let mut c = Plain::connect(&s).await;
    assert!(matches!(c.walk(1, &["branch", "master", "transactions"]).await, Fcall::Rwalk { .. }));
    c.call(Fcall::Tcreate {
        fid: 1,
        name: b"t".to_vec(),
        perm: 0x8000_0755,
        mode: 0,
        extension: Vec::new(),
    })
    .await;
    // go-datakit's Remove: walk onto itself; a missing path ends it there.
    let walked =
        c.walk(2, &["branch", "master", "transactions", "t", "rw", "does-not-exist"]).await;
    assert_eq!(ename(&walked), "No such file or directory");
    // The fid is still the root's: nothing was removed.
    let ls = c.walk(3, &["branch", "master", "transactions", "t", "rw", "memory"]).await;
    assert!(matches!(ls, Fcall::Rwalk { .. }), "rw/memory is still there: {ls:?}");
}
