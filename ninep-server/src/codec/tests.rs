use super::*;

fn qid(n: u64) -> Qid {
    Qid { kind: Qid::DIR, version: n as u32, path: n }
}

fn stat() -> Stat {
    Stat {
        kind: 1,
        dev: 2,
        qid: qid(3),
        mode: 0o755 | 0x8000_0000,
        atime: 4,
        mtime: 5,
        length: 6,
        name: b"memory".to_vec(),
        uid: b"root".to_vec(),
        gid: b"root".to_vec(),
        muid: b"".to_vec(),
        extension: b"".to_vec(),
        n_uid: 0,
        n_gid: 0,
        n_muid: 0,
    }
}

/// One of each message, with non-trivial values (names that are not UTF-8 included).
fn samples() -> Vec<Fcall> {
    use Fcall::*;
    let name = b"etc\xff".to_vec();
    vec![
        Rlerror { ecode: 30 },
        Tstatfs { fid: 1 },
        Rstatfs {
            kind: 0x01021997,
            bsize: 4096,
            blocks: 1,
            bfree: 2,
            bavail: 3,
            files: 4,
            ffree: 5,
            fsid: 6,
            namelen: 255,
        },
        Tlopen { fid: 1, flags: 0o100002 },
        Rlopen { qid: qid(9), iounit: 0 },
        Tlcreate { fid: 1, name: name.clone(), flags: 1, mode: 0o644, gid: 0 },
        Rlcreate { qid: qid(1), iounit: 8192 },
        Tsymlink { fid: 1, name: name.clone(), target: b"../x".to_vec(), gid: 0 },
        Rsymlink { qid: qid(2) },
        Tmknod { dfid: 1, name: name.clone(), mode: 1, major: 2, minor: 3, gid: 4 },
        Rmknod { qid: qid(3) },
        Trename { fid: 1, dfid: 2, name: name.clone() },
        Rrename {},
        Treadlink { fid: 1 },
        Rreadlink { target: b"t".to_vec() },
        Tgetattr { fid: 1, request_mask: 0x3fff },
        Rgetattr {
            valid: 0x7ff,
            qid: qid(4),
            mode: 0o100644,
            uid: 0,
            gid: 0,
            nlink: 1,
            rdev: 0,
            size: 5,
            blksize: 4096,
            blocks: 1,
            atime_sec: 1,
            atime_nsec: 2,
            mtime_sec: 3,
            mtime_nsec: 4,
            ctime_sec: 5,
            ctime_nsec: 6,
            btime_sec: 7,
            btime_nsec: 8,
            gen: 9,
            data_version: 10,
        },
        Tsetattr {
            fid: 1,
            valid: 8,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime_sec: 0,
            atime_nsec: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
        },
        Rsetattr {},
        Txattrwalk { fid: 1, newfid: 2, name: b"security.capability".to_vec() },
        Rxattrwalk { size: 0 },
        Txattrcreate { fid: 1, name: b"user.x".to_vec(), attr_size: 3, flags: 0 },
        Rxattrcreate {},
        Treaddir { fid: 1, offset: 0, count: 8168 },
        Rreaddir { data: vec![1, 2, 3] },
        Tfsync { fid: 1, datasync: 1 },
        Rfsync {},
        Tlock {
            fid: 1,
            kind: 1,
            flags: 0,
            start: 0,
            length: 0,
            proc_id: 7,
            client_id: b"guest".to_vec(),
        },
        Rlock { status: 0 },
        Tgetlock {
            fid: 1,
            kind: 0,
            start: 0,
            length: 10,
            proc_id: 7,
            client_id: b"guest".to_vec(),
        },
        Rgetlock { kind: 2, start: 0, length: 10, proc_id: 7, client_id: b"guest".to_vec() },
        Tlink { dfid: 1, fid: 2, name: name.clone() },
        Rlink {},
        Tmkdir { dfid: 1, name: name.clone(), mode: 0o755, gid: 0 },
        Rmkdir { qid: qid(5) },
        Trenameat { olddirfid: 1, oldname: b"a".to_vec(), newdirfid: 2, newname: b"b".to_vec() },
        Rrenameat {},
        Tunlinkat { dirfid: 1, name: name.clone(), flags: 0x200 },
        Runlinkat {},
        Tversion { msize: 524288, version: b"9P2000.L".to_vec() },
        Rversion { msize: 131072, version: b"9P2000.L".to_vec() },
        Tauth { afid: 5, uname: b"root".to_vec(), aname: b"".to_vec(), n_uname: 0 },
        Rauth { aqid: qid(6) },
        Tattach {
            fid: 0,
            afid: NOFID,
            uname: b"root".to_vec(),
            aname: b"ctl".to_vec(),
            n_uname: 0,
        },
        Rattach { qid: qid(7) },
        Rerror { ename: b"No such file or directory".to_vec(), errno: 2 },
        Tflush { oldtag: 3 },
        Rflush {},
        Twalk {
            fid: 0,
            newfid: 1,
            names: vec![b"branch".to_vec(), b"master".to_vec(), name.clone()],
        },
        Rwalk { qids: vec![qid(1), qid(2)] },
        Topen { fid: 1, mode: 0 },
        Ropen { qid: qid(8), iounit: 0 },
        Tcreate { fid: 1, name: name.clone(), perm: 0o644, mode: 1, extension: b"".to_vec() },
        Rcreate { qid: qid(9), iounit: 0 },
        Tread { fid: 1, offset: 1 << 40, count: 4096 },
        Rread { data: b"2048\n".to_vec() },
        Twrite { fid: 1, offset: 0, data: b"4096\n".to_vec() },
        Rwrite { count: 5 },
        Tclunk { fid: 1 },
        Rclunk {},
        Tremove { fid: 1 },
        Rremove {},
        Tstat { fid: 1 },
        Rstat { stat: stat() },
        Twstat { fid: 1, stat: stat() },
        Rwstat {},
    ]
}

/// A message as it comes back from a dialect that lacks some of its fields.
fn as_seen_by(fcall: &Fcall, dialect: Dialect) -> Fcall {
    let mut f = fcall.clone();
    match (&mut f, dialect) {
        (Fcall::Tattach { n_uname, .. } | Fcall::Tauth { n_uname, .. }, Dialect::Plain) => {
            *n_uname = NONUNAME
        }
        (Fcall::Rerror { errno, .. }, Dialect::L | Dialect::Plain) => *errno = 0,
        _ => {}
    }
    f
}

#[test]
fn every_message_round_trips_in_every_dialect() {
    for dialect in [Dialect::L, Dialect::U, Dialect::Plain] {
        for (i, fcall) in samples().into_iter().enumerate() {
            let frame = Frame { tag: i as u16, fcall };
            let bytes = frame.encode(dialect);
            assert_eq!(
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
                bytes.len()
            );
            let back = Frame::decode(&bytes, dialect)
                .unwrap_or_else(|e| panic!("{}: {e}", frame.fcall.name()));
            assert_eq!(back.tag, frame.tag);
            assert_eq!(back.fcall, as_seen_by(&frame.fcall, dialect), "{dialect:?}");
        }
    }
}

#[test]
fn known_bytes_of_a_tversion() {
    let frame =
        Frame { tag: NOTAG, fcall: Fcall::Tversion { msize: 8192, version: b"9P2000.L".to_vec() } };
    let expected = [
        21, 0, 0, 0, 100, 0xff, 0xff, 0x00, 0x20, 0, 0, 8, 0, b'9', b'P', b'2', b'0', b'0', b'0',
        b'.', b'L',
    ];
    assert_eq!(frame.encode(Dialect::L), expected);
}

#[test]
fn truncated_trailing_and_unknown_frames_are_errors() {
    for fcall in samples() {
        let bytes = Frame { tag: 1, fcall }.encode(Dialect::U);
        for cut in HEADER..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            short[..4].copy_from_slice(&(cut as u32).to_le_bytes());
            assert!(Frame::decode(&short, Dialect::U).is_err(), "cut at {cut} of {}", bytes.len());
        }
        let mut long = bytes.clone();
        long.push(0);
        let n = long.len() as u32;
        long[..4].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(Frame::decode(&long, Dialect::U), Err(DecodeError::Trailing { .. })));
    }
    let unknown = [7, 0, 0, 0, 99, 0, 0];
    assert_eq!(Frame::decode(&unknown, Dialect::L), Err(DecodeError::UnknownType(99)));
    assert!(Frame::size(6u32.to_le_bytes(), 8192).is_err());
    assert!(Frame::size(9000u32.to_le_bytes(), 8192).is_err());
    assert_eq!(Frame::size(8192u32.to_le_bytes(), 8192), Ok(8192));
}

#[test]
fn walks_are_bounded() {
    let names = vec![b"x".to_vec(); 17];
    let bytes =
        Frame { tag: 1, fcall: Fcall::Twalk { fid: 0, newfid: 1, names } }.encode(Dialect::L);
    assert_eq!(Frame::decode(&bytes, Dialect::L), Err(DecodeError::TooManyNames(17)));
    // A count that promises more names than the frame holds is refused before allocating.
    let mut lie = Frame { tag: 1, fcall: Fcall::Twalk { fid: 0, newfid: 1, names: vec![] } }
        .encode(Dialect::L);
    let at = lie.len() - 2;
    lie[at..].copy_from_slice(&16u16.to_le_bytes());
    assert!(matches!(Frame::decode(&lie, Dialect::L), Err(DecodeError::Truncated { .. })));
}

#[test]
fn random_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let samples = samples();
    for round in 0..20_000 {
        // Mutations of valid frames reach deeper than pure noise.
        let mut bytes =
            Frame { tag: 1, fcall: samples[round % samples.len()].clone() }.encode(Dialect::U);
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let _ = Frame::decode(&bytes, Dialect::U);
        let _ = Frame::decode(&bytes, Dialect::L);
    }
}

#[test]
fn readdir_entries_round_trip() {
    let entries = vec![
        DirEntry { qid: qid(1), offset: 1, kind: 4, name: b"branch".to_vec() },
        DirEntry { qid: qid(2), offset: 2, kind: 8, name: b"memory".to_vec() },
    ];
    let mut data = Vec::new();
    for e in &entries {
        e.encode(&mut data);
    }
    assert_eq!(data.len(), entries.iter().map(DirEntry::size).sum::<usize>());
    assert_eq!(DirEntry::decode_all(&data), Ok(entries));
    assert!(DirEntry::decode_all(&data[..data.len() - 1]).is_err());
}
