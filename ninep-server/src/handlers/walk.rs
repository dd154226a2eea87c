//! Twalk, as DataKit's server answers it: all the names or an error, never a partial walk.
//! go-datakit walks a fid onto itself and takes a missing path from the error; a partial
//! Rwalk (which the 9P manual allows, and which leaves the fid where it was) made its next
//! request act on the wrong file. The Linux client and diod's tools take either answer.

use std::sync::{Arc, Mutex};

use super::{comps_of, inline};
use crate::codec::Fcall;
use crate::errno::*;
use crate::fs::Fs;
use crate::state::{lock, FidCell, State};

pub(super) fn walk(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    newfid: u32,
    names: Vec<Vec<u8>>,
) -> Result<Fcall, Errno> {
    let start = comps_of(state, fid)?;
    if newfid != fid && lock(state).fids.contains_key(&newfid) {
        return Err(EBADF);
    }
    let (comps, qids) = inline(fs, move |fs| {
        let mut comps = start;
        let mut here = fs.classify(&comps)?;
        let mut qids = Vec::with_capacity(names.len());
        for name in &names {
            here = match std::str::from_utf8(name) {
                Ok("..") => {
                    comps.pop();
                    fs.classify(&comps)?
                }
                _ if !here.is_dir() => return Err(WALK_FROM_FILE),
                Ok(".") => here,
                Ok(name) if !name.is_empty() && !name.contains(['/', '\0']) => {
                    comps.push(name.to_owned());
                    fs.classify(&comps)?
                }
                _ => return Err(ENOENT),
            };
            qids.push(fs.qid(&comps, &here));
        }
        Ok((comps, qids))
    })?;
    lock(state).insert_fid(newfid, FidCell::new(comps))?;
    Ok(Fcall::Rwalk { qids })
}
