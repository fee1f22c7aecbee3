//! The set of volumes a FUSE mount shows: name ↔ inode ↔ volume, plus open-handle counts so a
//! volume that is still open (e.g. by a loop device) is never pulled from under its user.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::io::VolumeIo;

/// Inode of the mount's root directory (fixed by the FUSE protocol).
pub(crate) const ROOT_INODE: u64 = 1;

/// One served volume.
pub(crate) struct Served {
    pub(crate) inode: u64,
    pub(crate) volume: Arc<dyn VolumeIo>,
    /// Open file handles on this volume (open − release).
    pub(crate) open_handles: u64,
}

/// Volumes by name. Inode numbers are never reused within one mount, so a handle or cached
/// dentry of a removed volume can never reach a newer volume that took the same name.
pub(crate) struct Registry {
    by_name: BTreeMap<String, Served>,
    name_by_inode: BTreeMap<u64, String>,
    next_inode: u64,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            by_name: BTreeMap::new(),
            name_by_inode: BTreeMap::new(),
            next_inode: ROOT_INODE + 1,
        }
    }

    /// Adds `volume` under `name`; returns false (and changes nothing) if the name is taken.
    pub(crate) fn insert(&mut self, name: &str, volume: Arc<dyn VolumeIo>) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.name_by_inode.insert(inode, name.to_owned());
        self.by_name.insert(
            name.to_owned(),
            Served {
                inode,
                volume,
                open_handles: 0,
            },
        );
        true
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Served> {
        self.by_name.get(name)
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Served> {
        let served = self.by_name.remove(name)?;
        self.name_by_inode.remove(&served.inode);
        Some(served)
    }

    pub(crate) fn by_inode(&self, inode: u64) -> Option<(&str, &Served)> {
        let name = self.name_by_inode.get(&inode)?;
        let served = self.by_name.get(name)?;
        Some((name.as_str(), served))
    }

    pub(crate) fn by_inode_mut(&mut self, inode: u64) -> Option<&mut Served> {
        let name = self.name_by_inode.get(&inode)?;
        self.by_name.get_mut(name)
    }

    /// Volumes in name order (the order `readdir` lists them in).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Served)> {
        self.by_name
            .iter()
            .map(|(name, served)| (name.as_str(), served))
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}
