//! Twrite: writes go straight to the node; the filesystem decides what a write to each means
//! (a working-tree file, a transaction's ctl, a branch's fast-forward).

use std::sync::{Arc, Mutex};

use super::{blocking, comps_of};
use crate::codec::Fcall;
use crate::errno::Errno;
use crate::fs::Fs;
use crate::state::State;

pub(super) async fn write(
    fs: &Arc<Fs>,
    state: &Mutex<State>,
    fid: u32,
    offset: u64,
    data: Vec<u8>,
) -> Result<Fcall, Errno> {
    let comps = comps_of(state, fid)?;
    let count = blocking(fs, move |fs| fs.write(&fs.classify(&comps)?, offset, &data)).await?;
    Ok(Fcall::Rwrite { count })
}
