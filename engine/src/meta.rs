//! The volume metadata file: the layer tree, snapshot names and labels, the volume size and any
//! operation in flight. Written crash-safely: new file, fsync, rename over, fsync the directory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::sync_dir;

pub const META_FILE: &str = "volume.json";
pub const META_TMP: &str = "volume.json.tmp";
const FORMAT: u32 = 1;

pub type LayerId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub format: u32,
    pub name: String,
    pub size: u64,
    pub head: LayerId,
    pub layers: BTreeMap<LayerId, LayerMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    pub parent: Option<LayerId>,
    pub created: jiff::Timestamp,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Role {
    /// The writable top layer.
    Head,
    /// A frozen, named layer.
    Snapshot {
        name: String,
        labels: BTreeMap<String, String>,
        volume_size: u64,
    },
    /// A frozen bottom layer imported from an image.
    Backing { name: String },
    /// A frozen unnamed layer that only exists while an operation is in flight.
    Internal,
    /// A snapshot the user deleted while several branches (after a revert) still read it. It is
    /// hidden, and merged away as soon as at most one child is left.
    Removed,
}

/// An operation that was committed but whose clean-up copy may not have finished; it is
/// finished when the volume is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Pending {
    /// Delete snapshot `from`: copy the sectors `into` lacks from `from`, then drop `from`.
    Merge { from: LayerId, into: LayerId },
    /// Restore swap: copy every sector of `upper` into `lower`, then make `lower` the head.
    Fold { upper: LayerId, lower: LayerId },
}

pub fn layer_file_name(id: LayerId) -> String {
    format!("layer-{id:08}.img")
}

/// Parses a layer file name back to its id.
pub fn layer_id_of(file_name: &str) -> Option<LayerId> {
    file_name
        .strip_prefix("layer-")?
        .strip_suffix(".img")?
        .parse()
        .ok()
}

impl VolumeMeta {
    pub fn new(name: &str, size: u64) -> VolumeMeta {
        VolumeMeta {
            format: FORMAT,
            name: name.to_string(),
            size,
            head: 0,
            layers: BTreeMap::new(),
            pending: None,
        }
    }

    /// Layer ids from `from` down to the bottom of its chain.
    pub fn chain_of(&self, from: LayerId) -> Vec<LayerId> {
        let mut out = Vec::new();
        let mut cur = Some(from);
        while let Some(id) = cur {
            out.push(id);
            cur = self.layers.get(&id).and_then(|l| l.parent);
            if out.len() > self.layers.len() {
                break; // validated acyclic on load; defensive
            }
        }
        out
    }

    pub fn snapshot_id(&self, name: &str) -> Option<LayerId> {
        self.layers.iter().find_map(|(id, l)| match &l.role {
            Role::Snapshot { name: n, .. } if n == name => Some(*id),
            _ => None,
        })
    }

    pub fn children_of(&self, id: LayerId) -> Vec<LayerId> {
        self.layers
            .iter()
            .filter(|(_, l)| l.parent == Some(id))
            .map(|(c, _)| *c)
            .collect()
    }

    pub fn max_id(&self) -> LayerId {
        self.layers.keys().next_back().copied().unwrap_or(0)
    }

    /// Structural checks; a failure names what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not supported (expected {FORMAT})",
                self.format
            ));
        }
        match self.layers.get(&self.head) {
            Some(l) if l.role == Role::Head => {}
            Some(_) => return Err(format!("head layer {} is not marked as head", self.head)),
            None => return Err(format!("head layer {} is missing", self.head)),
        }
        let mut names = std::collections::BTreeSet::new();
        for (id, l) in &self.layers {
            if l.role == Role::Head && *id != self.head {
                return Err(format!(
                    "layer {id} is marked as head but the head is {}",
                    self.head
                ));
            }
            if let Some(p) = l.parent
                && !self.layers.contains_key(&p)
            {
                return Err(format!("layer {id} has missing parent {p}"));
            }
            if let Role::Snapshot { name, .. } = &l.role
                && !names.insert(name.clone())
            {
                return Err(format!("snapshot name {name:?} is used twice"));
            }
            if self.chain_of(*id).len() > self.layers.len() {
                return Err(format!("layer {id} is part of a parent cycle"));
            }
        }
        if let Some(p) = self.pending {
            let (a, b) = match p {
                Pending::Merge { from, into } => (from, into),
                Pending::Fold { upper, lower } => (upper, lower),
            };
            if !self.layers.contains_key(&a) || !self.layers.contains_key(&b) {
                return Err(format!("pending operation {p:?} names a missing layer"));
            }
        }
        Ok(())
    }

    pub fn load(dir: &Path) -> Result<VolumeMeta> {
        let path = dir.join(META_FILE);
        let text =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let meta: VolumeMeta =
            serde_json::from_slice(&text).map_err(|e| Error::CorruptMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        meta.validate()
            .map_err(|reason| Error::CorruptMetadata { path, reason })?;
        Ok(meta)
    }

    /// Writes the metadata crash-safely. `before_rename` runs after the new file is durable and
    /// before it replaces the old one (the fail-point hook).
    pub fn store(&self, dir: &Path, before_rename: impl FnOnce() -> Result<()>) -> Result<()> {
        let tmp: PathBuf = dir.join(META_TMP);
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io("encoding volume metadata", std::io::Error::other(e)))?;
        let mut f = File::create(&tmp).map_err(|e| Error::io(ctx("creating"), e))?;
        f.write_all(&bytes)
            .map_err(|e| Error::io(ctx("writing"), e))?;
        f.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
        drop(f);
        before_rename()?;
        let path = dir.join(META_FILE);
        fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        sync_dir(dir).map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
    }
}

/// Checks a volume or snapshot name; `None` when valid.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > 63 {
        return Some("it is longer than 63 characters");
    }
    if name.starts_with('.') {
        return Some("it starts with '.'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Some("it contains a character outside a-z, A-Z, 0-9, '.', '_', '-'");
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layer(parent: Option<LayerId>, role: Role) -> LayerMeta {
        LayerMeta {
            parent,
            created: jiff::Timestamp::UNIX_EPOCH,
            role,
        }
    }

    fn snap(name: &str) -> Role {
        Role::Snapshot {
            name: name.into(),
            labels: BTreeMap::new(),
            volume_size: 4096,
        }
    }

    fn valid() -> VolumeMeta {
        let mut m = VolumeMeta::new("v", 4096);
        m.layers.insert(1, layer(None, snap("a")));
        m.layers.insert(2, layer(Some(1), Role::Head));
        m.head = 2;
        m
    }

    type Breakage = Box<dyn Fn(&mut VolumeMeta)>;

    #[test]
    fn validation_finds_each_structural_fault() {
        assert_eq!(valid().validate(), Ok(()));
        let cases: Vec<(&str, Breakage)> = vec![
            ("missing", Box::new(|m| m.head = 9)),
            ("not marked as head", Box::new(|m| m.head = 1)),
            (
                "missing parent",
                Box::new(|m| m.layers.get_mut(&1).unwrap().parent = Some(7)),
            ),
            (
                "cycle",
                Box::new(|m| m.layers.get_mut(&1).unwrap().parent = Some(2)),
            ),
            (
                "used twice",
                Box::new(|m| drop(m.layers.insert(3, layer(None, snap("a"))))),
            ),
            (
                "marked as head",
                Box::new(|m| drop(m.layers.insert(3, layer(None, Role::Head)))),
            ),
            (
                "missing layer",
                Box::new(|m| m.pending = Some(Pending::Merge { from: 1, into: 5 })),
            ),
            ("format", Box::new(|m| m.format = 99)),
        ];
        for (needle, break_it) in cases {
            let mut m = valid();
            break_it(&mut m);
            let err = m.validate().unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn metadata_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = valid();
        m.pending = Some(Pending::Fold { upper: 2, lower: 1 });
        m.store(dir.path(), || Ok(())).unwrap();
        assert_eq!(VolumeMeta::load(dir.path()).unwrap(), m);
        assert!(!dir.path().join(META_TMP).exists());
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(name_problem("pvc-1.snap_2"), None);
        for bad in ["", ".x", "a/b", "ä", &"x".repeat(64)] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(layer_id_of(&layer_file_name(42)), Some(42));
        assert_eq!(layer_id_of("layer-x.img"), None);
    }
}
