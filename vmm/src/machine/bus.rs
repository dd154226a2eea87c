//! The address spaces a vCPU exit lands in: I/O ports and MMIO. Each device owns a range and
//! sees offsets into it; an access nobody owns reads as all ones and is otherwise ignored, as
//! on a real bus.

use std::sync::{Arc, Mutex};

/// A device on a bus.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared by the vCPUs that reach it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Devices by address range: (base, length, device).
#[derive(Default, Clone)]
pub struct Bus {
    ranges: Vec<(u64, u64, SharedDevice)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<_> = self.ranges.iter().map(|(b, l, _)| (*b, *l)).collect();
        f.debug_struct("Bus").field("ranges", &ranges).finish()
    }
}

impl Bus {
    /// Adds `device` at `base..base + len`; overlapping ranges are a programming error the
    /// caller checks with [`Bus::overlaps`].
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) {
        self.ranges.push((base, len, device));
        self.ranges.sort_by_key(|(b, _, _)| *b);
    }

    pub fn overlaps(&self, base: u64, len: u64) -> bool {
        self.ranges.iter().any(|(b, l, _)| base < b + l && *b < base + len)
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let i = self.ranges.partition_point(|(b, _, _)| *b <= addr).checked_sub(1)?;
        let (base, len, device) = &self.ranges[i];
        (addr < base + len).then_some((addr - base, device))
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((offset, device)) => lock(device).read(offset, data),
            None => data.fill(0xff),
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((offset, device)) = self.find(addr) {
            lock(device).write(offset, data);
        }
    }
}

/// A device whose lock was poisoned by a panic is still the best state there is.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_owner_with_offsets() {
        let echo = Arc::new(Mutex::new(Echo(Vec::new())));
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, echo.clone());
        bus.insert(0x60, 1, Arc::new(Mutex::new(Echo(Vec::new()))));
        let mut b = [0u8; 1];
        bus.read(0x3fa, &mut b);
        assert_eq!(b, [2]);
        bus.read(0x400, &mut b);
        assert_eq!(b, [0xff], "nobody owns it");
        bus.write(0x3ff, &[9]);
        assert_eq!(lock(&echo).0, vec![(7, vec![9])]);
        assert!(bus.overlaps(0x3f0, 9) && !bus.overlaps(0x3f0, 8));
    }
}
