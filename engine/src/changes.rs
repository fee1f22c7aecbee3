//! Change tracking and the backup seams: a snapshot's view for export, the extents a full or
//! incremental backup must read, and `BlockSource` over both. All extents come from the
//! layers' allocated sectors; unchanged data is never read to find changes.

use std::io;
use std::sync::Arc;

use backupstore::source::{BlockSource, Extent};

use crate::chain::{Chain, chain_data_spans, read_chain};
use crate::error::{Error, Result};
use crate::meta::{LayerId, Role};
use crate::sector::{Span, align_spans};
use crate::volume::{State, Volume};

/// A frozen snapshot's view: its layer and everything below it. It keeps the layer files open,
/// so it stays readable even if the snapshot is deleted meanwhile.
pub struct SnapshotReader {
    volume: Arc<Volume>,
    snapshot: String,
    chain: Chain,
    size: u64,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotReader({:?}/{:?})",
            self.volume.name(),
            self.snapshot
        )
    }
}

fn check_block_size(block_size: u64) -> Result<()> {
    if block_size == 0 || !block_size.is_multiple_of(crate::sector::SECTOR) {
        return Err(Error::InvalidBlockSize { block_size });
    }
    Ok(())
}

fn to_extents(spans: &[Span]) -> Vec<Extent> {
    spans
        .iter()
        .map(|&(s, e)| Extent {
            offset: s,
            len: e - s,
        })
        .collect()
}

fn spans_of(layers: &[Arc<crate::layer::LayerFile>], size: u64) -> io::Result<Vec<Span>> {
    chain_data_spans(layers, 0, size)
}

impl SnapshotReader {
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// Size of the volume when the snapshot was taken.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => {
                return Err(Error::OutOfRange {
                    volume: format!("{}@{}", self.volume.name(), self.snapshot),
                    offset,
                    len: buf.len() as u64,
                    size: self.size,
                }
                .into());
            }
        }
        // Shared lock: a merge below this snapshot rewrites layers of this chain (without
        // changing what it reads) only under the exclusive lock.
        let _st = self.volume.read_state();
        read_chain(&self.chain, offset, buf)
    }

    /// Every range that may hold data (allocated in any layer of the chain), widened to
    /// `block_size` boundaries and clipped to the snapshot's size.
    pub fn allocated_extents(&self, block_size: u64) -> Result<Vec<Extent>> {
        check_block_size(block_size)?;
        let _st = self.volume.read_state();
        let spans = spans_of(&self.chain, self.size)
            .map_err(|e| Error::io("listing snapshot extents", e))?;
        Ok(to_extents(&align_spans(&spans, block_size, self.size)))
    }
}

impl Volume {
    /// A reader of snapshot `name`'s view (for export and backup).
    pub fn snapshot_reader(self: &Arc<Self>, name: &str) -> Result<SnapshotReader> {
        let st = self.read_state();
        let id = self.find_snapshot(&st, name)?;
        Ok(SnapshotReader {
            volume: Arc::clone(self),
            snapshot: name.to_string(),
            chain: st.chain_of(id),
            size: snapshot_size(&st, id),
        })
    }

    /// Every range of the live (head) view that may hold data, widened to `block_size`
    /// boundaries: for a sparse export of a volume that is not written meanwhile.
    pub fn allocated_extents(&self, block_size: u64) -> Result<Vec<Extent>> {
        check_block_size(block_size)?;
        let st = self.read_state();
        let spans = spans_of(&st.chain, st.meta.size)
            .map_err(|e| Error::io("listing volume extents", e))?;
        Ok(to_extents(&align_spans(&spans, block_size, st.meta.size)))
    }

    /// Layers whose sectors changed from `from` (exclusive) up to `to` (inclusive); with no
    /// `from`, the whole chain of `to`. Fails when `from` is not an ancestor of `to`.
    fn diff_layers(&self, st: &State, from: Option<&str>, to: &str) -> Result<(LayerId, Chain)> {
        let to_id = self.find_snapshot(st, to)?;
        let chain_ids = st.meta.chain_of(to_id);
        let ids: &[LayerId] = match from {
            None => &chain_ids,
            Some(from) => {
                let from_id = self.find_snapshot(st, from)?;
                match chain_ids.iter().position(|id| *id == from_id) {
                    Some(pos) if from_id != to_id => &chain_ids[..pos],
                    _ => {
                        return Err(Error::NotAncestor {
                            volume: self.name().to_string(),
                            from: from.to_string(),
                            to: to.to_string(),
                        });
                    }
                }
            }
        };
        Ok((
            to_id,
            ids.iter()
                .filter_map(|id| st.files.get(id).cloned())
                .collect(),
        ))
    }

    /// The blocks (of `block_size`) that differ between snapshot `from` and snapshot `to`, or
    /// every block that may hold data in `to` when `from` is `None`. An exact diff exists only
    /// when `from` is an ancestor of `to`; otherwise this returns [`Error::NotAncestor`].
    pub fn changed_extents(
        &self,
        from: Option<&str>,
        to: &str,
        block_size: u64,
    ) -> Result<Vec<Extent>> {
        check_block_size(block_size)?;
        let st = self.read_state();
        let (to_id, layers) = self.diff_layers(&st, from, to)?;
        let size = snapshot_size(&st, to_id);
        let spans = spans_of(&layers, size).map_err(|e| Error::io("listing changed extents", e))?;
        Ok(to_extents(&align_spans(&spans, block_size, size)))
    }

    /// A backup source over snapshot `to`: full when `from` is `None`, else incremental from
    /// `from` (which must be an ancestor of `to`, see [`Volume::changed_extents`]).
    pub fn backup_source(self: &Arc<Self>, from: Option<&str>, to: &str) -> Result<SnapshotSource> {
        let reader = self.snapshot_reader(to)?;
        let st = self.read_state();
        let (_, layers) = self.diff_layers(&st, from, to)?;
        Ok(SnapshotSource {
            reader,
            changed_layers: layers,
            base: from.map(str::to_owned),
        })
    }
}

fn snapshot_size(st: &State, id: LayerId) -> u64 {
    match st.meta.layers.get(&id).map(|l| &l.role) {
        Some(Role::Snapshot { volume_size, .. }) => *volume_size,
        _ => st.meta.size,
    }
}

/// [`BlockSource`] over a snapshot: full (every allocated block of its chain) or incremental
/// (the blocks allocated in the layers above the base snapshot).
#[derive(Debug)]
pub struct SnapshotSource {
    reader: SnapshotReader,
    changed_layers: Chain,
    /// The snapshot this source is a diff against; `None` for a full source.
    base: Option<String>,
}

impl SnapshotSource {
    pub fn reader(&self) -> &SnapshotReader {
        &self.reader
    }
}

impl BlockSource for SnapshotSource {
    fn size(&self) -> u64 {
        self.reader.size
    }

    fn extents(&self, block_size: u64) -> io::Result<Vec<Extent>> {
        check_block_size(block_size)?;
        let _st = self.reader.volume.read_state();
        let spans = spans_of(&self.changed_layers, self.reader.size)?;
        Ok(to_extents(&align_spans(
            &spans,
            block_size,
            self.reader.size,
        )))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read_at(offset, buf)
    }

    /// A full source lists every allocated block, so an incremental backup must drop blocks of
    /// the previous map outside it (they are holes now, e.g. after a revert).
    fn covers_whole_volume(&self) -> bool {
        self.base.is_none()
    }

    /// The store refuses to lay this diff over a last backup taken from another snapshot.
    fn diff_base(&self) -> Option<String> {
        self.base.clone()
    }
}
