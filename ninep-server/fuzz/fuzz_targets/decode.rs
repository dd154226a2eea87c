//! Any bytes a client can send: decoding never panics nor allocates beyond the frame, and
//! whatever decodes re-encodes to a frame that decodes to the same message.
#![no_main]

use cairn_9p::codec::DirEntry;
use cairn_9p::{Dialect, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(prefix) = <[u8; 4]>::try_from(data.get(..4).unwrap_or_default()) {
        let _ = Frame::size(prefix, 1 << 20);
    }
    for dialect in [Dialect::L, Dialect::U, Dialect::Plain] {
        if let Ok(frame) = Frame::decode(data, dialect) {
            let again = Frame::decode(&frame.encode(dialect), dialect);
            assert_eq!(again.as_ref(), Ok(&frame), "re-encoding changed the message");
        }
    }
    if let Ok(entries) = DirEntry::decode_all(data) {
        let mut out = Vec::new();
        for entry in &entries {
            entry.encode(&mut out);
        }
        assert_eq!(out, data, "readdir entries re-encode to the same bytes");
    }
});
