//! Restore targets: a whole new volume ([`VolumeSink`]) and a staged layer on a standby volume
//! ([`StagedRestore`]) that becomes visible all at once on `commit`.

use std::io;
use std::sync::{Arc, Mutex};

use backupstore::source::BlockSink;

use crate::chain::{write_bulk_sectors, zero_sectors};
use crate::error::Result;
use crate::layer::LayerFile;
use crate::meta::LayerId;
use crate::volume::Volume;

/// [`BlockSink`] writing straight into a volume's head (restore into a fresh volume).
#[derive(Debug, Clone)]
pub struct VolumeSink {
    volume: Arc<Volume>,
}

impl VolumeSink {
    pub fn new(volume: Arc<Volume>) -> VolumeSink {
        VolumeSink { volume }
    }
}

impl BlockSink for VolumeSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.volume.write_bulk_at(offset, data)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.volume.discard(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        self.volume.flush()
    }
}

/// A restore being written into a new layer above the volume's head. Until [`commit`], readers
/// of the volume see the old data; after it, the new. Dropping it uncommitted discards it.
///
/// [`commit`]: StagedRestore::commit
#[derive(Debug)]
pub struct StagedRestore {
    volume: Arc<Volume>,
    id: LayerId,
    layer: Arc<LayerFile>,
    base_head: LayerId,
    base_writes: u64,
    rmw: Mutex<()>,
    done: bool,
}

impl Volume {
    /// Starts a staged restore. The volume must not be written, reverted or snapshotted until
    /// [`StagedRestore::commit`], which otherwise fails with `StagedRestoreConflict`.
    pub fn stage_restore(self: &Arc<Self>) -> Result<StagedRestore> {
        let st = self.read_state();
        let (id, layer) = self.alloc_layer(st.meta.size)?;
        Ok(StagedRestore {
            volume: Arc::clone(self),
            id,
            layer,
            base_head: st.meta.head,
            base_writes: self.writes.load(std::sync::atomic::Ordering::Acquire),
            rmw: Mutex::new(()),
            done: false,
        })
    }
}

impl StagedRestore {
    /// The staged layer on top of the volume's current chain.
    fn with_chain<T>(&self, f: impl FnOnce(&[Arc<LayerFile>]) -> io::Result<T>) -> io::Result<T> {
        let st = self.volume.read_state();
        let mut chain = Vec::with_capacity(st.chain.len() + 1);
        chain.push(Arc::clone(&self.layer));
        chain.extend(st.chain.iter().cloned());
        f(&chain)
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = self.volume.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(crate::Error::OutOfRange {
                volume: self.volume.name().to_string(),
                offset,
                len,
                size,
            }
            .into()),
        }
    }

    /// Makes the staged data the volume's data in one crash-safe metadata change.
    pub fn commit(mut self) -> Result<()> {
        let result = self.volume.commit_staged(
            self.id,
            Arc::clone(&self.layer),
            self.base_head,
            self.base_writes,
        );
        // Refused before any change: the layer is still ours to delete (on drop). Otherwise
        // metadata may reference it now and the volume's reopen sorts it out.
        self.done = !matches!(
            result,
            Err(crate::Error::StagedRestoreConflict { .. } | crate::Error::Poisoned { .. })
        );
        result
    }
}

impl BlockSink for StagedRestore {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_range(offset, data.len() as u64)?;
        self.with_chain(|chain| write_bulk_sectors(chain, &self.rmw, offset, data))
    }

    /// Records zeros (not holes) where the volume below holds data, so the swap zeroes them.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_range(offset, len)?;
        self.with_chain(|chain| zero_sectors(chain, &chain[1..], &self.rmw, offset, len))
    }

    fn flush(&self) -> io::Result<()> {
        self.layer.sync_data()
    }
}

impl Drop for StagedRestore {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned: the layer was never referenced by metadata.
            let _ = std::fs::remove_file(self.layer.path());
        }
    }
}
