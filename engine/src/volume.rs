//! A volume: its layer tree on disk, I/O through the head's chain, and the structural
//! operations (snapshot, revert, delete snapshot, expand). I/O takes the state lock shared;
//! every structural operation takes it exclusively, so a snapshot never splits a write.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rustix::fs::FlockOperation;

use crate::chain::{Chain, read_chain, write_bulk_sectors, write_sectors, zero_sectors};
use crate::error::{Error, Result};
use crate::failpoint::FailPoint;
use crate::layer::{LayerFile, sync_dir};
use crate::meta::{
    LayerId, LayerMeta, META_TMP, Pending, Role, VolumeMeta, layer_file_name, layer_id_of,
    name_problem,
};
use crate::sector::{SECTOR, subtract};

/// Name of the per-volume lock file (flock, held while the volume is open).
const LOCK_FILE: &str = "lock";

/// What `list_snapshots` reports about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// The snapshot this one was taken on top of (`None` at the bottom or above a backing image).
    pub parent: Option<String>,
    /// Snapshots taken directly on top of this one (several after a revert).
    pub children: Vec<String>,
    /// Whether the writable head sits directly on this snapshot.
    pub head_is_child: bool,
    pub created: jiff::Timestamp,
    pub labels: BTreeMap<String, String>,
    /// Allocated bytes of this snapshot's own layer (what it adds on top of its parent).
    pub size: u64,
    /// Size of the volume when the snapshot was taken.
    pub volume_size: u64,
}

pub(crate) struct State {
    pub(crate) meta: VolumeMeta,
    pub(crate) files: HashMap<LayerId, Arc<LayerFile>>,
    /// The head's chain, head first.
    pub(crate) chain: Chain,
}

impl State {
    fn rebuild_chain(&mut self) {
        self.chain = self
            .meta
            .chain_of(self.meta.head)
            .iter()
            .filter_map(|id| self.files.get(id).cloned())
            .collect();
    }

    pub(crate) fn head(&self) -> &Arc<LayerFile> {
        &self.chain[0]
    }

    pub(crate) fn chain_of(&self, id: LayerId) -> Chain {
        self.meta
            .chain_of(id)
            .iter()
            .filter_map(|id| self.files.get(id).cloned())
            .collect()
    }
}

pub struct Volume {
    name: String,
    dir: PathBuf,
    pub(crate) state: RwLock<State>,
    /// Serialises read-merge-write of partial sectors.
    rmw: Mutex<()>,
    /// Bumped by every write and discard; a staged restore refuses to commit over new writes.
    pub(crate) writes: AtomicU64,
    next_id: AtomicU64,
    poisoned: AtomicBool,
    fail_point: Mutex<Option<FailPoint>>,
    _lock: File,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Volume({:?} at {})", self.name, self.dir.display())
    }
}

impl Volume {
    /// Opens the volume stored in `dir`: locks it, removes leftovers of interrupted operations
    /// and finishes a committed operation whose copy was cut short.
    pub(crate) fn open(name: &str, dir: &Path) -> Result<Volume> {
        let lock = lock_volume_dir(name, dir)?;
        let meta = VolumeMeta::load(dir)?;
        let mut max_seen = meta.max_id();
        let entries =
            fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let leftover = match layer_id_of(&file_name) {
                Some(id) => {
                    max_seen = max_seen.max(id);
                    !meta.layers.contains_key(&id)
                }
                None => file_name == META_TMP,
            };
            if leftover {
                tracing::info!(
                    volume = name,
                    file = file_name,
                    "removing leftover of an interrupted operation"
                );
                fs::remove_file(entry.path()).map_err(|e| {
                    Error::io(format!("removing leftover {}", entry.path().display()), e)
                })?;
            }
        }
        let mut files = HashMap::new();
        for id in meta.layers.keys() {
            let path = dir.join(layer_file_name(*id));
            let file = LayerFile::open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::CorruptMetadata {
                    path: dir.join(crate::meta::META_FILE),
                    reason: format!("layer file {} is missing", path.display()),
                },
                _ => Error::io(format!("opening layer {}", path.display()), e),
            })?;
            files.insert(*id, Arc::new(file));
        }
        let pending = meta.pending;
        let mut state = State {
            meta,
            files,
            chain: Vec::new(),
        };
        state.rebuild_chain();
        let volume = Volume {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            rmw: Mutex::new(()),
            writes: AtomicU64::new(0),
            next_id: AtomicU64::new(max_seen + 1),
            poisoned: AtomicBool::new(false),
            fail_point: Mutex::new(None),
            _lock: lock,
        };
        if pending.is_some() {
            tracing::info!(
                volume = name,
                ?pending,
                "finishing an operation interrupted by a crash"
            );
        }
        {
            // Finish a committed merge or fold, then merge away removed snapshots that a crash
            // left with a single child.
            let mut st = volume.write_state()?;
            volume.mutate(&mut st, |st| {
                volume.finish_pending(st)?;
                volume.purge_removed(st)
            })?;
        }
        Ok(volume)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory holding this volume's metadata and layer files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    // ---- locking, poisoning, fail points ----

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        let st = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.check_poisoned()?;
        Ok(st)
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned {
                volume: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Runs a structural change; any failure leaves memory possibly out of step with the disk,
    /// so the volume refuses further work until reopened (which reads the disk's truth).
    fn mutate<T>(&self, st: &mut State, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let r = f(st);
        if r.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        r
    }

    /// Test hook: the next time the operation reaches `point`, it fails as a crash there would.
    #[doc(hidden)]
    pub fn inject_failure(&self, point: FailPoint) {
        *self.fail_point.lock().unwrap_or_else(|e| e.into_inner()) = Some(point);
    }

    fn fail(&self, point: FailPoint) -> Result<()> {
        let mut fp = self.fail_point.lock().unwrap_or_else(|e| e.into_inner());
        if *fp == Some(point) {
            *fp = None;
            return Err(Error::InjectedFailure(point));
        }
        Ok(())
    }

    pub(crate) fn alloc_layer(&self, len: u64) -> Result<(LayerId, Arc<LayerFile>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(layer_file_name(id));
        let file = LayerFile::create(&path, len)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        sync_dir(&self.dir).map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        Ok((id, Arc::new(file)))
    }

    fn commit(&self, st: &mut State, meta: VolumeMeta) -> Result<()> {
        debug_assert!(meta.validate().is_ok(), "{:?}", meta.validate());
        meta.store(&self.dir, || self.fail(FailPoint::MetadataBeforeRename))?;
        st.meta = meta;
        st.files.retain(|id, _| st.meta.layers.contains_key(id));
        st.rebuild_chain();
        Ok(())
    }

    fn unlink_layer(&self, id: LayerId) {
        let path = self.dir.join(layer_file_name(id));
        if let Err(e) = fs::remove_file(&path) {
            // Harmless: an unreferenced layer file is removed the next time the volume opens.
            tracing::warn!(file = %path.display(), error = %e, "could not remove a dropped layer");
        }
    }

    fn io_err(&self, what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
        let context = format!("volume {:?}: {what}", self.name);
        move |e| Error::io(context, e)
    }

    // ---- I/O on the head ----

    pub fn size(&self) -> u64 {
        self.read_state().meta.size
    }

    fn check_range(&self, offset: u64, len: u64, size: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange {
                volume: self.name.clone(),
                offset,
                len,
                size,
            }
            .into()),
        }
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.read_state();
        self.check_range(offset, buf.len() as u64, st.meta.size)?;
        read_chain(&st.chain, offset, buf)
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let st = self.read_state();
        self.check_range(offset, data.len() as u64, st.meta.size)?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        write_sectors(&st.chain, &self.rmw, offset, data)
    }

    /// [`Volume::write_at`] for bulk data (a restore): whole sectors go to the device with
    /// direct I/O instead of through the page cache.
    pub fn write_bulk_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let st = self.read_state();
        self.check_range(offset, data.len() as u64, st.meta.size)?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        write_bulk_sectors(&st.chain, &self.rmw, offset, data)
    }

    /// Makes `[offset, offset+len)` read as zeros. Where a lower layer holds data the head gets
    /// real zeros (a hole there would expose the older data); elsewhere the head's sectors
    /// are punched out.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let st = self.read_state();
        self.check_range(offset, len, st.meta.size)?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        zero_sectors(&st.chain, &st.chain[1..], &self.rmw, offset, len)
    }

    pub fn flush(&self) -> io::Result<()> {
        let st = self.read_state();
        st.head().sync_data()
    }

    // ---- structural operations ----

    /// Freezes the head as snapshot `name` and starts a new empty head: O(1) in volume size
    /// (one fsync of the head's dirty data, one new sparse file, one metadata write).
    pub fn snapshot(&self, name: &str, labels: BTreeMap<String, String>) -> Result<SnapshotInfo> {
        if let Some(reason) = name_problem(name) {
            return Err(Error::InvalidSnapshotName {
                name: name.to_string(),
                reason,
            });
        }
        let mut st = self.write_state()?;
        if st.meta.snapshot_id(name).is_some() {
            return Err(Error::SnapshotExists {
                volume: self.name.clone(),
                snapshot: name.to_string(),
            });
        }
        self.mutate(&mut st, |st| {
            st.head()
                .sync_data()
                .map_err(self.io_err("syncing the head"))?;
            let (id, file) = self.alloc_layer(st.meta.size)?;
            st.files.insert(id, file);
            self.fail(FailPoint::SnapshotBeforeCommit)?;
            let old_head = st.meta.head;
            let mut m = st.meta.clone();
            if let Some(l) = m.layers.get_mut(&old_head) {
                l.role = Role::Snapshot {
                    name: name.to_string(),
                    labels,
                    volume_size: st.meta.size,
                };
                l.created = jiff::Timestamp::now();
            }
            m.layers.insert(
                id,
                LayerMeta {
                    parent: Some(old_head),
                    created: jiff::Timestamp::now(),
                    role: Role::Head,
                },
            );
            m.head = id;
            self.commit(st, m)?;
            self.snapshot_info(st, old_head)
        })
    }

    /// Discards the head and starts a new empty head on `name`. The volume keeps its current
    /// size; bytes past the snapshot's size read as zeros.
    pub fn revert(&self, name: &str) -> Result<()> {
        let mut st = self.write_state()?;
        let target = self.find_snapshot(&st, name)?;
        self.mutate(&mut st, |st| {
            let (id, file) = self.alloc_layer(st.meta.size)?;
            st.files.insert(id, file);
            self.fail(FailPoint::RevertBeforeCommit)?;
            let old_head = st.meta.head;
            let mut m = st.meta.clone();
            m.layers.remove(&old_head);
            m.layers.insert(
                id,
                LayerMeta {
                    parent: Some(target),
                    created: jiff::Timestamp::now(),
                    role: Role::Head,
                },
            );
            m.head = id;
            self.commit(st, m)?;
            self.unlink_layer(old_head);
            self.purge_removed(st)
        })
    }

    /// Deletes snapshot `name` without changing what any other snapshot or the head reads: its
    /// layer is merged into its only child (copying just the sectors the child lacks), or just
    /// dropped if it is a leaf (a branch left by a revert). With several children it is hidden
    /// (role `Removed`, name free again) and merged away once at most one child is left.
    pub fn delete_snapshot(&self, name: &str) -> Result<()> {
        let mut st = self.write_state()?;
        let id = self.find_snapshot(&st, name)?;
        self.mutate(&mut st, |st| {
            let mut m = st.meta.clone();
            if let Some(l) = m.layers.get_mut(&id) {
                l.role = Role::Removed;
            }
            if m.children_of(id).len() > 1 {
                self.commit(st, m)?;
            } else {
                self.drop_or_merge(st, m, id)?;
            }
            self.purge_removed(st)
        })
    }

    /// Drops layer `id` (no children) or merges it into its only child, starting from `m`.
    fn drop_or_merge(&self, st: &mut State, mut m: VolumeMeta, id: LayerId) -> Result<()> {
        match m.children_of(id).first() {
            None => {
                m.layers.remove(&id);
                self.commit(st, m)?;
                self.unlink_layer(id);
                Ok(())
            }
            Some(&child) => {
                m.pending = Some(Pending::Merge {
                    from: id,
                    into: child,
                });
                self.commit(st, m)?;
                self.fail(FailPoint::MergeAfterIntent)?;
                self.finish_pending(st)
            }
        }
    }

    /// Merges away every removed snapshot that is down to one child or none.
    fn purge_removed(&self, st: &mut State) -> Result<()> {
        loop {
            let meta = &st.meta;
            let next = meta
                .layers
                .iter()
                .find(|(id, l)| l.role == Role::Removed && meta.children_of(**id).len() <= 1)
                .map(|(id, _)| *id);
            let Some(id) = next else { return Ok(()) };
            let m = st.meta.clone();
            self.drop_or_merge(st, m, id)?;
        }
    }

    /// Completes the committed operation recorded in `pending` (idempotent, so a crash at any
    /// point inside it is finished by the next open).
    fn finish_pending(&self, st: &mut State) -> Result<()> {
        let Some(pending) = st.meta.pending else {
            return Ok(());
        };
        let file = |id: LayerId| st.files.get(&id).cloned();
        let (source_id, dest_id, mid_point, end_point) = match pending {
            Pending::Merge { from, into } => (
                from,
                into,
                FailPoint::MergeMidCopy,
                Some(FailPoint::MergeBeforeCommit),
            ),
            Pending::Fold { upper, lower } => (upper, lower, FailPoint::SwapMidFold, None),
        };
        let (Some(source), Some(dest)) = (file(source_id), file(dest_id)) else {
            return Err(Error::CorruptMetadata {
                path: self.dir.join(crate::meta::META_FILE),
                reason: format!("pending {pending:?} names a layer without a file"),
            });
        };
        let len = source.len().map_err(self.io_err("sizing a layer"))?;
        let source_spans = source
            .data_spans(0, len)
            .map_err(self.io_err("listing extents"))?;
        let to_copy = match pending {
            // Sectors the child already has are newer than the parent's: keep them.
            Pending::Merge { .. } => {
                let dest_spans = dest
                    .data_spans(0, len)
                    .map_err(self.io_err("listing extents"))?;
                subtract(&source_spans, &dest_spans)
            }
            // The staged layer holds the restore's result (zeros included): all of it wins.
            Pending::Fold { .. } => source_spans,
        };
        let half = to_copy.len().div_ceil(2);
        source
            .copy_spans_to(&dest, &to_copy[..half])
            .map_err(self.io_err("copying sectors"))?;
        self.fail(mid_point)?;
        source
            .copy_spans_to(&dest, &to_copy[half..])
            .map_err(self.io_err("copying sectors"))?;
        dest.sync_data().map_err(self.io_err("syncing a layer"))?;
        if let Some(point) = end_point {
            self.fail(point)?;
        }
        let mut m = st.meta.clone();
        m.pending = None;
        match pending {
            Pending::Merge { from, into } => {
                let parent = m.layers.get(&from).and_then(|l| l.parent);
                if let Some(child) = m.layers.get_mut(&into) {
                    child.parent = parent;
                }
                m.layers.remove(&from);
            }
            Pending::Fold { upper, lower } => {
                m.layers.remove(&upper);
                if let Some(l) = m.layers.get_mut(&lower) {
                    l.role = Role::Head;
                }
                m.head = lower;
            }
        }
        self.commit(st, m)?;
        self.unlink_layer(source_id);
        Ok(())
    }

    /// Swaps a fully written, synced staged layer in as the new view (one metadata write), then
    /// folds it into the old head. Readers see the old view until the swap, the new one after.
    pub(crate) fn commit_staged(
        &self,
        staged_id: LayerId,
        staged: Arc<LayerFile>,
        base_head: LayerId,
        base_writes: u64,
    ) -> Result<()> {
        let mut st = self.write_state()?;
        if st.meta.head != base_head || self.writes.load(Ordering::Acquire) != base_writes {
            return Err(Error::StagedRestoreConflict {
                volume: self.name.clone(),
            });
        }
        self.mutate(&mut st, |st| {
            staged
                .sync_all()
                .map_err(self.io_err("syncing the staged layer"))?;
            self.fail(FailPoint::SwapBeforeCommit)?;
            st.files.insert(staged_id, staged);
            let old_head = st.meta.head;
            let mut m = st.meta.clone();
            if let Some(l) = m.layers.get_mut(&old_head) {
                l.role = Role::Internal;
            }
            m.layers.insert(
                staged_id,
                LayerMeta {
                    parent: Some(old_head),
                    created: jiff::Timestamp::now(),
                    role: Role::Head,
                },
            );
            m.head = staged_id;
            m.pending = Some(Pending::Fold {
                upper: staged_id,
                lower: old_head,
            });
            self.commit(st, m)?;
            self.fail(FailPoint::SwapAfterCommit)?;
            self.finish_pending(st)
        })
    }

    /// Grows the volume to `new_size` bytes (a multiple of 4096); the new range reads as zeros.
    pub fn expand(&self, new_size: u64) -> Result<()> {
        let mut st = self.write_state()?;
        let size = st.meta.size;
        if new_size == 0 || !new_size.is_multiple_of(SECTOR) {
            return Err(Error::InvalidSize { size: new_size });
        }
        if new_size < size {
            return Err(Error::ShrinkNotSupported {
                volume: self.name.clone(),
                size,
                requested: new_size,
            });
        }
        if new_size == size {
            return Ok(());
        }
        // A longer head file changes nothing visible (reads stop at the metadata's size), so a
        // failure here (e.g. a size the filesystem cannot hold) leaves the volume usable.
        st.head()
            .set_len(new_size)
            .map_err(self.io_err("growing the head"))?;
        st.head()
            .sync_all()
            .map_err(self.io_err("syncing the head"))?;
        self.mutate(&mut st, |st| {
            let mut m = st.meta.clone();
            m.size = new_size;
            self.commit(st, m)
        })
    }

    // ---- inspection ----

    pub(crate) fn find_snapshot(&self, st: &State, name: &str) -> Result<LayerId> {
        st.meta
            .snapshot_id(name)
            .ok_or_else(|| Error::SnapshotNotFound {
                volume: self.name.clone(),
                snapshot: name.to_string(),
            })
    }

    fn snapshot_name(st: &State, id: LayerId) -> Option<String> {
        match &st.meta.layers.get(&id)?.role {
            Role::Snapshot { name, .. } => Some(name.clone()),
            _ => None,
        }
    }

    /// The nearest snapshot below `id`, looking through removed layers.
    fn visible_parent(st: &State, id: LayerId) -> Option<String> {
        let mut cur = st.meta.layers.get(&id)?.parent;
        while let Some(p) = cur {
            let layer = st.meta.layers.get(&p)?;
            match layer.role {
                Role::Removed | Role::Internal => cur = layer.parent,
                _ => return Self::snapshot_name(st, p),
            }
        }
        None
    }

    /// Layers directly above `id`, looking through removed layers (snapshots and the head).
    fn visible_children(st: &State, id: LayerId) -> Vec<LayerId> {
        let mut out = Vec::new();
        let mut todo = st.meta.children_of(id);
        while let Some(c) = todo.pop() {
            match st.meta.layers.get(&c).map(|l| &l.role) {
                Some(Role::Removed | Role::Internal) => todo.extend(st.meta.children_of(c)),
                Some(_) => out.push(c),
                None => {}
            }
        }
        out.sort_unstable();
        out
    }

    fn snapshot_info(&self, st: &State, id: LayerId) -> Result<SnapshotInfo> {
        let Some(layer) = st.meta.layers.get(&id) else {
            return Err(Error::SnapshotNotFound {
                volume: self.name.clone(),
                snapshot: format!("layer {id}"),
            });
        };
        let Role::Snapshot {
            name,
            labels,
            volume_size,
        } = &layer.role
        else {
            return Err(Error::SnapshotNotFound {
                volume: self.name.clone(),
                snapshot: format!("layer {id}"),
            });
        };
        let children = Self::visible_children(st, id);
        let size = match st.files.get(&id) {
            Some(f) => f
                .allocated_bytes()
                .map_err(self.io_err("measuring a snapshot"))?,
            None => 0,
        };
        Ok(SnapshotInfo {
            name: name.clone(),
            parent: Self::visible_parent(st, id),
            children: children
                .iter()
                .filter_map(|c| Self::snapshot_name(st, *c))
                .collect(),
            head_is_child: children.contains(&st.meta.head),
            created: layer.created,
            labels: labels.clone(),
            size,
            volume_size: *volume_size,
        })
    }

    /// Every snapshot, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let st = self.read_state();
        let ids: Vec<LayerId> = st
            .meta
            .layers
            .iter()
            .filter(|(_, l)| matches!(l.role, Role::Snapshot { .. }))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .map(|id| self.snapshot_info(&st, id))
            .collect()
    }

    /// Bytes written (or zeroed) since the last snapshot: the head's allocated sectors.
    pub fn head_changed_bytes(&self) -> Result<u64> {
        let st = self.read_state();
        st.head()
            .allocated_bytes()
            .map_err(self.io_err("measuring the head"))
    }

    /// Bytes allocated on the node by every layer of the volume (head, snapshots, backing
    /// image, layers awaiting a merge): what the volume costs its disk.
    pub fn actual_size(&self) -> Result<u64> {
        let st = self.read_state();
        st.files.values().try_fold(0u64, |sum, f| {
            let bytes = f
                .allocated_bytes()
                .map_err(self.io_err("measuring a layer"))?;
            Ok(sum + bytes)
        })
    }

    /// Number of layers in the head's chain (head, snapshots, backing image).
    pub fn chain_len(&self) -> usize {
        self.read_state().chain.len()
    }
}

/// Takes the volume's lock file (held for as long as the returned file is open), so two
/// processes never drive one volume.
pub(crate) fn lock_volume_dir(name: &str, dir: &Path) -> Result<File> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        Error::VolumeLocked {
            name: name.to_string(),
            path: lock_path.clone(),
        }
    })?;
    Ok(lock)
}

impl crate::io::VolumeIo for Volume {
    fn size(&self) -> u64 {
        Volume::size(self)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        Volume::read_at(self, offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        Volume::write_at(self, offset, data)
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        Volume::discard(self, offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        Volume::flush(self)
    }
}
