//! The FUSE request handlers: a flat root directory with one regular file per volume whose
//! bytes are the volume's bytes. Nothing else can be created, renamed or deleted through the
//! mount; volumes come and go only through [`super::MountedVolumes`].

use std::ffi::OsStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};
use rustix::fs::FallocateFlags;

use super::registry::{ROOT_INODE, Registry};
use crate::io::VolumeIo;

/// How long the kernel may cache names and attributes. Short, because a volume can be expanded
/// or removed behind the kernel's back; a loop device re-reads the size only on `losetup -c`.
const ATTR_TTL: Duration = Duration::from_secs(1);

/// Block size reported to `stat` and `statfs`: the engine's sector size.
const BLOCK_SIZE: u32 = 4096;

pub(crate) struct VolumeFs {
    pub(crate) registry: Arc<RwLock<Registry>>,
    /// Owner of every file: the owner of the mount-point directory.
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mounted_at: SystemTime,
    pub(crate) max_write: u32,
}

impl VolumeFs {
    fn read_registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        // Registry updates are plain map inserts and removes that cannot panic halfway, so a
        // lock poisoned by a panic elsewhere still guards a consistent registry.
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_registry(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The volume behind `inode`, cloned out so the registry lock is not held during I/O
    /// (a slow write must not block lookups, `add` or `remove`).
    fn volume(&self, inode: INodeNo) -> Result<Arc<dyn VolumeIo>, Errno> {
        match self.read_registry().by_inode(inode.0) {
            Some((_, served)) => Ok(Arc::clone(&served.volume)),
            None if inode.0 == ROOT_INODE => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_attr(&self, inode: u64, size: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(inode),
            size,
            // Volumes are sparse but the frontend cannot see allocation cheaply; reporting the
            // full size keeps tools from guessing "sparse" and probing SEEK_HOLE, which we lack.
            blocks: size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    fn root_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(ROOT_INODE),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    fn attr_of(&self, inode: INodeNo) -> Result<FileAttr, Errno> {
        if inode.0 == ROOT_INODE {
            return Ok(self.root_attr());
        }
        let volume = self.volume(inode)?;
        Ok(self.file_attr(inode.0, volume.size()))
    }
}

fn io_errno(err: std::io::Error) -> Errno {
    if let Some(code) = os_error_code(&err) {
        return Errno::from_i32(code);
    }
    // Engine errors without an OS code (corrupt metadata, a poisoned volume) are I/O errors to
    // the kernel; the log keeps the detail.
    tracing::warn!(error = %err, "volume I/O failed");
    match err.kind() {
        std::io::ErrorKind::InvalidInput => Errno::EINVAL,
        std::io::ErrorKind::StorageFull => Errno::ENOSPC,
        _ => Errno::EIO,
    }
}

/// The OS error code of `err` or of the OS error an engine error wraps (disk full must reach
/// the workload as ENOSPC, not as a generic EIO).
fn os_error_code(err: &std::io::Error) -> Option<i32> {
    if let Some(code) = err.raw_os_error() {
        return Some(code);
    }
    let mut source = err
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(current) = source {
        if let Some(code) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        source = current.source();
    }
    None
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(self.max_write) {
            // Fall back to the largest size the session supports.
            let _ = config.set_max_write(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT_INODE {
            return reply.error(Errno::ENOTDIR);
        }
        let found = name.to_str().and_then(|name| {
            self.read_registry()
                .get(name)
                .map(|served| (served.inode, Arc::clone(&served.volume)))
        });
        match found {
            Some((inode, volume)) => reply.entry(
                &ATTR_TTL,
                &self.file_attr(inode, volume.size()),
                Generation(0),
            ),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino) {
            Ok(attr) => reply.attr(&ATTR_TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let attr = match self.attr_of(ino) {
            Ok(attr) => attr,
            Err(errno) => return reply.error(errno),
        };
        // Size, owner and mode belong to the engine (expand a volume through the engine); a
        // truncate to the current size is a no-op that tools such as `dd conv=notrunc` send.
        let changes_size = size.is_some_and(|size| size != attr.size);
        if changes_size || mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        // Time stamps are accepted and ignored so `touch` works.
        reply.attr(&ATTR_TTL, &attr)
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut registry = self.write_registry();
        match registry.by_inode_mut(ino.0) {
            Some(served) => {
                served.open_handles += 1;
                // Direct I/O: no second page cache under the loop device's, every write reaches
                // the engine before it is acknowledged, and concurrent writes are not
                // serialised by the kernel's inode lock.
                reply.opened(
                    FileHandle(ino.0),
                    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
                );
            }
            None if ino.0 == ROOT_INODE => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(served) = self.write_registry().by_inode_mut(ino.0) {
            served.open_handles = served.open_handles.saturating_sub(1);
        }
        reply.ok();
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let volume = match self.volume(ino) {
            Ok(volume) => volume,
            Err(errno) => return reply.error(errno),
        };
        let len = volume.size().saturating_sub(offset).min(u64::from(size));
        let Ok(len) = usize::try_from(len) else {
            return reply.error(Errno::EINVAL);
        };
        let mut buf = vec![0u8; len];
        if len > 0
            && let Err(err) = volume.read_at(offset, &mut buf)
        {
            return reply.error(io_errno(err));
        }
        reply.data(&buf)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let volume = match self.volume(ino) {
            Ok(volume) => volume,
            Err(errno) => return reply.error(errno),
        };
        let room = volume.size().saturating_sub(offset);
        if room == 0 && !data.is_empty() {
            // A volume has a fixed size, like a disk: no room past the end.
            return reply.error(Errno::ENOSPC);
        }
        let len = usize::try_from(room).map_or(data.len(), |room| room.min(data.len()));
        match volume.write_at(offset, &data[..len]) {
            // `len` <= data.len() <= max_write, which fits u32.
            Ok(()) => reply.written(u32::try_from(len).unwrap_or(u32::MAX)),
            Err(err) => reply.error(io_errno(err)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): writes are already in the engine (direct I/O); durability is fsync's job.
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let volume = match self.volume(ino) {
            Ok(volume) => volume,
            Err(errno) => return reply.error(errno),
        };
        match volume.flush() {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(io_errno(err)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let volume = match self.volume(ino) {
            Ok(volume) => volume,
            Err(errno) => return reply.error(errno),
        };
        let Ok(mode) = u32::try_from(mode) else {
            return reply.error(Errno::EINVAL);
        };
        let flags = FallocateFlags::from_bits_retain(mode);
        let size = volume.size();
        let end = offset.saturating_add(length);
        let zeroes = FallocateFlags::PUNCH_HOLE | FallocateFlags::ZERO_RANGE;
        let supported = zeroes | FallocateFlags::KEEP_SIZE;
        if !supported.contains(flags) {
            // COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE would shift or reshape a disk.
            return reply.error(Errno::EOPNOTSUPP);
        }
        if flags.intersects(zeroes) {
            // Punch hole (TRIM from a loop device) and zero range both mean "reads return zeros";
            // the engine decides how (a hole only where no lower layer has data).
            let end = end.min(size);
            if offset < end
                && let Err(err) = volume.discard(offset, end - offset)
            {
                return reply.error(io_errno(err));
            }
            return reply.ok();
        }
        // Plain preallocation: space is not reserved in a sparse volume, but the range must lie
        // inside the volume unless the caller keeps the size.
        if end > size && !flags.contains(FallocateFlags::KEEP_SIZE) {
            return reply.error(Errno::EFBIG);
        }
        reply.ok()
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT_INODE {
            return reply.error(Errno::ENOTDIR);
        }
        let entries: Vec<(u64, FileType, String)> = {
            let registry = self.read_registry();
            [
                (ROOT_INODE, FileType::Directory, ".".to_owned()),
                (ROOT_INODE, FileType::Directory, "..".to_owned()),
            ]
            .into_iter()
            .chain(
                registry
                    .iter()
                    .map(|(name, served)| (served.inode, FileType::RegularFile, name.to_owned())),
            )
            .collect()
        };
        // The offset handed back is the index of the next entry.
        for (index, (inode, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*inode), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The directory is not stored anywhere; there is nothing to make durable.
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (total_bytes, files) = {
            let registry = self.read_registry();
            registry
                .iter()
                .fold((0u64, 0u64), |(bytes, files), (_, served)| {
                    (bytes.saturating_add(served.volume.size()), files + 1)
                })
        };
        let blocks = total_bytes / u64::from(BLOCK_SIZE);
        reply.statfs(blocks, 0, 0, files, 0, BLOCK_SIZE, 255, BLOCK_SIZE)
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM)
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM)
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM)
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM)
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EPERM)
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EPERM)
    }
}
