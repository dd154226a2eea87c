//! The data disk as the control loop runs it: made (or grown) before each boot to the `disk`
//! key's size, and grown live under a running qemu when the key grows (the guest's agent then
//! grows its filesystem). On the embedded VMM a growth waits for the next boot.

use cairn_db::ObjectId;

use super::Controller;
use crate::Error;

impl Controller {
    /// The `disk` key of `commit`, in MiB.
    fn disk_mib(&self, commit: ObjectId) -> Result<u64, Error> {
        let raw = self.db.read(&commit.to_string(), "disk")?.unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).trim().to_owned();
        text.parse().map_err(|_| Error::BadSetting { key: "disk".into(), value: text })
    }

    /// Makes the data disk exist at `commit`'s size before a boot.
    pub(super) fn prepare_disk(
        &self,
        commit: ObjectId,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        let mib = self.disk_mib(commit)?;
        let path = &self.data_disk;
        match crate::vm::disk::ensure(path, mib).map_err(|e| Error::io(path, e))? {
            crate::vm::disk::Ensured::Created => progress(&format!(
                "data disk: {} ({mib} MiB, sparse), formatted by the guest",
                path.display()
            )),
            crate::vm::disk::Ensured::Grown { from, to } => {
                progress(&format!("data disk: grown from {} to {} MiB", from >> 20, to >> 20))
            }
            crate::vm::disk::Ensured::Unchanged => {
                let size = crate::vm::disk::host_view(path).map_or(0, |d| d.size_bytes >> 20);
                if size > mib {
                    progress(&format!("data disk: kept at {size} MiB, larger than `disk` ({mib} MiB): it only grows"));
                }
            }
        }
        Ok(())
    }

    /// The `disk` key grew while the VM runs: on qemu, grow the file and tell qemu, which tells
    /// the guest; on the embedded VMM, the next boot takes it.
    pub(super) fn grow_disk_live(
        &mut self,
        commit: ObjectId,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        if self.native {
            progress("data disk: the new size applies at the next boot (the embedded VMM resizes no disk live)");
            return Ok(());
        }
        self.prepare_disk(commit, progress)?;
        // The file's size, not the key's: a key set below it (by hand, in git) shrinks nothing.
        let Some(disk) = crate::vm::disk::host_view(&self.data_disk) else { return Ok(()) };
        let bytes = disk.size_bytes;
        if let Err(e) =
            crate::vm::qmp::block_resize(&self.run.qmp(), crate::vm::qemu::DATA_DRIVE, bytes)
        {
            progress(&format!(
                "data disk: qemu did not resize it live ({e}); it applies at the next boot"
            ));
        }
        Ok(())
    }
}
