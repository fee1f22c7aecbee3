//! Property test: random sequences of writes, discards, snapshots, reverts, snapshot deletes
//! and expansions on a real volume (sparse files in a temp dir), each compared with a simple
//! in-memory model of the layer tree: every read, every snapshot's view, every snapshot's
//! allocated size and every changed-extents answer must match exactly.
//!
//! Cases: 24 by default; set `ENGINE_PROPTEST_CASES` (e.g. 2000) for a long run.

// A failed unwrap is how a test reports an unexpected error.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use backupstore::source::{BlockSource, Extent};
use engine::{BackingLayer, Engine, Error, SECTOR, Volume};
use proptest::prelude::*;

const S: u64 = SECTOR;

#[derive(Debug, Clone)]
enum Op {
    Write { at: u64, len: u64, seed: u8 },
    Discard { at: u64, len: u64 },
    Snapshot,
    Revert(usize),
    Delete(usize),
    Expand(u64),
    Read { at: u64, len: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![1u64..64, 1u64..3 * S, Just(S), Just(2 * S), 1u64..12 * S];
    prop_oneof![
        6 => (any::<u64>(), len.clone(), any::<u8>()).prop_map(|(at, len, seed)| Op::Write { at, len, seed }),
        3 => (any::<u64>(), len.clone()).prop_map(|(at, len)| Op::Discard { at, len }),
        3 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Revert),
        2 => any::<usize>().prop_map(Op::Delete),
        1 => (1u64..6).prop_map(Op::Expand),
        2 => (any::<u64>(), len).prop_map(|(at, len)| Op::Read { at, len }),
        1 => Just(Op::Reopen),
    ]
}

type Sector = Vec<u8>;

#[derive(Debug, Clone)]
struct MLayer {
    parent: Option<usize>,
    sectors: BTreeMap<u64, Sector>,
}

/// The reference: the same layer tree, with sectors in maps.
struct Model {
    layers: HashMap<usize, MLayer>,
    head: usize,
    /// Snapshot name → (layer, volume size at snapshot time), in creation order.
    snaps: Vec<(String, usize, u64)>,
    size: u64,
    next: usize,
    /// Layer 0 is a backing image.
    backing: bool,
}

impl Model {
    fn chain(&self, from: usize) -> Vec<usize> {
        let mut out = vec![from];
        while let Some(p) = self.layers[out.last().unwrap()].parent {
            out.push(p);
        }
        out
    }

    fn sector(&self, top: usize, n: u64) -> Sector {
        for id in self.chain(top) {
            if let Some(s) = self.layers[&id].sectors.get(&n) {
                return s.clone();
            }
        }
        vec![0; S as usize]
    }

    fn read(&self, top: usize, at: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize);
        let mut pos = at;
        while pos < at + len {
            let n = pos / S;
            let sector = self.sector(top, n);
            let from = (pos - n * S) as usize;
            let to = ((at + len).min((n + 1) * S) - n * S) as usize;
            out.extend_from_slice(&sector[from..to]);
            pos = n * S + to as u64;
        }
        out
    }

    fn write(&mut self, at: u64, data: &[u8]) {
        let mut pos = at;
        let end = at + data.len() as u64;
        while pos < end {
            let n = pos / S;
            let mut sector = self.sector(self.head, n);
            let from = (pos - n * S) as usize;
            let to = (end.min((n + 1) * S) - n * S) as usize;
            sector[from..to]
                .copy_from_slice(&data[(pos - at) as usize..(pos - at) as usize + (to - from)]);
            self.layers
                .get_mut(&self.head)
                .unwrap()
                .sectors
                .insert(n, sector);
            pos = n * S + to as u64;
        }
    }

    fn discard(&mut self, at: u64, len: u64) {
        let end = at + len;
        let first_full = at.div_ceil(S) * S;
        let last_full = end / S * S;
        if first_full >= last_full {
            self.write(at, &vec![0; len as usize]);
            return;
        }
        self.write(at, &vec![0; (first_full - at) as usize]);
        self.write(last_full, &vec![0; (end - last_full) as usize]);
        let lower: Vec<usize> = self.chain(self.head)[1..].to_vec();
        for n in first_full / S..last_full / S {
            let below = lower
                .iter()
                .any(|id| self.layers[id].sectors.contains_key(&n));
            let head = self.layers.get_mut(&self.head).unwrap();
            if below {
                head.sectors.insert(n, vec![0; S as usize]);
            } else {
                head.sectors.remove(&n);
            }
        }
    }

    /// A layer the user deleted that other branches still read.
    fn is_hidden(&self, id: usize) -> bool {
        id != self.head
            && !self.snaps.iter().any(|(_, s, _)| *s == id)
            && !(self.backing && id == 0)
    }

    fn drop_or_merge(&mut self, id: usize) {
        let children = self.children(id);
        let gone = self.layers.remove(&id).unwrap();
        if let Some(c) = children.first() {
            let child = self.layers.get_mut(c).unwrap();
            for (n, s) in gone.sectors {
                child.sectors.entry(n).or_insert(s);
            }
            child.parent = gone.parent;
        }
    }

    fn purge(&mut self) {
        loop {
            let mut ids: Vec<usize> = self.layers.keys().copied().collect();
            ids.sort();
            let Some(id) = ids
                .into_iter()
                .find(|id| self.is_hidden(*id) && self.children(*id).len() <= 1)
            else {
                return;
            };
            self.drop_or_merge(id);
        }
    }

    /// The nearest named snapshot below `id`.
    fn visible_parent(&self, id: usize) -> Option<usize> {
        let mut cur = self.layers[&id].parent;
        while let Some(p) = cur {
            if !self.is_hidden(p) {
                return Some(p);
            }
            cur = self.layers[&p].parent;
        }
        None
    }

    fn children(&self, id: usize) -> Vec<usize> {
        let mut c: Vec<usize> = self
            .layers
            .iter()
            .filter(|(_, l)| l.parent == Some(id))
            .map(|(k, _)| *k)
            .collect();
        c.sort();
        c
    }

    /// Sectors allocated in the layers from `to` down to, excluding, `from` (or the whole chain).
    fn changed_sectors(&self, from: Option<usize>, to: usize) -> Option<BTreeSet<u64>> {
        let chain = self.chain(to);
        let layers: &[usize] = match from {
            None => &chain,
            Some(f) => &chain[..chain.iter().position(|x| *x == f).filter(|_| f != to)?],
        };
        Some(
            layers
                .iter()
                .flat_map(|id| self.layers[id].sectors.keys().copied())
                .collect(),
        )
    }
}

fn blocks_of(sectors: &BTreeSet<u64>, block: u64, limit: u64) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for n in sectors {
        let start = n * S / block * block;
        let end = (start + block).min(limit);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end() >= start => last.len = last.len.max(end - last.offset),
            _ => out.push(Extent {
                offset: start,
                len: end - start,
            }),
        }
    }
    out
}

fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8).wrapping_mul(3) | 1)
        .collect()
}

struct Harness {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    engine: Option<Engine>,
    vol: Option<Arc<Volume>>,
    model: Model,
    snap_counter: usize,
}

impl Harness {
    fn new(size_sectors: u64, backing: Option<Vec<Option<u8>>>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let engine = Engine::open(&root).unwrap();
        let size = size_sectors * S;
        let mut layers = HashMap::new();
        let mut head_parent = None;
        let mut next = 0;
        let backing_layer = backing.map(|content| {
            // A raw image: some sectors with data, some all-zero written, the rest holes.
            let raw = dir.path().join("backing.raw");
            let f = std::fs::File::create(&raw).unwrap();
            let image_len = (content.len() as u64 * S).min(size);
            f.set_len(image_len).unwrap();
            let mut sectors = BTreeMap::new();
            for (n, c) in content.iter().enumerate().take((image_len / S) as usize) {
                if let Some(seed) = c {
                    let data = if *seed == 0 {
                        vec![0; S as usize]
                    } else {
                        pattern(*seed, S)
                    };
                    std::os::unix::fs::FileExt::write_all_at(&f, &data, n as u64 * S).unwrap();
                    if *seed != 0 {
                        sectors.insert(n as u64, data);
                    }
                }
            }
            layers.insert(
                0,
                MLayer {
                    parent: None,
                    sectors,
                },
            );
            head_parent = Some(0);
            next = 1;
            BackingLayer {
                name: "base".into(),
                raw_path: raw,
            }
        });
        layers.insert(
            next,
            MLayer {
                parent: head_parent,
                sectors: BTreeMap::new(),
            },
        );
        let model = Model {
            layers,
            head: next,
            snaps: Vec::new(),
            size,
            next: next + 1,
            backing: next == 1,
        };
        let vol = engine.create_volume("vol", size, backing_layer).unwrap();
        Harness {
            _dir: dir,
            root,
            engine: Some(engine),
            vol: Some(vol),
            model,
            snap_counter: 0,
        }
    }

    fn vol(&self) -> &Arc<Volume> {
        self.vol.as_ref().unwrap()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let size = self.model.size;
        let clamp = |at: u64, len: u64| {
            let at = at % size;
            (at, len.min(size - at))
        };
        match op.clone() {
            Op::Write { at, len, seed } => {
                let (at, len) = clamp(at, len);
                let data = pattern(seed, len);
                self.vol().write_at(at, &data).unwrap();
                self.model.write(at, &data);
            }
            Op::Discard { at, len } => {
                let (at, len) = clamp(at, len);
                self.vol().discard(at, len).unwrap();
                self.model.discard(at, len);
            }
            Op::Snapshot => {
                self.snap_counter += 1;
                let name = format!("s{}", self.snap_counter);
                let labels = BTreeMap::from([("n".to_string(), self.snap_counter.to_string())]);
                let info = self.vol().snapshot(&name, labels.clone()).unwrap();
                prop_assert_eq!(&info.labels, &labels);
                let m = &mut self.model;
                let old = m.head;
                m.snaps.push((name, old, m.size));
                m.head = m.next;
                m.next += 1;
                m.layers.insert(
                    m.head,
                    MLayer {
                        parent: Some(old),
                        sectors: BTreeMap::new(),
                    },
                );
            }
            Op::Revert(i) => {
                if self.model.snaps.is_empty() {
                    return Ok(());
                }
                let (name, id, _) = self.model.snaps[i % self.model.snaps.len()].clone();
                self.vol().revert(&name).unwrap();
                let m = &mut self.model;
                m.layers.remove(&m.head);
                m.head = m.next;
                m.next += 1;
                m.layers.insert(
                    m.head,
                    MLayer {
                        parent: Some(id),
                        sectors: BTreeMap::new(),
                    },
                );
                m.purge();
            }
            Op::Delete(i) => {
                if self.model.snaps.is_empty() {
                    return Ok(());
                }
                let idx = i % self.model.snaps.len();
                let (name, id, _) = self.model.snaps[idx].clone();
                self.vol().delete_snapshot(&name).unwrap();
                let m = &mut self.model;
                m.snaps.remove(idx);
                // With several children it stays as a hidden layer until purged.
                if m.children(id).len() <= 1 {
                    m.drop_or_merge(id);
                }
                m.purge();
            }
            Op::Expand(sectors) => {
                let new = size + sectors * S;
                self.vol().expand(new).unwrap();
                self.model.size = new;
            }
            Op::Read { at, len } => {
                let (at, len) = clamp(at, len);
                let mut buf = vec![0xEE; len as usize];
                self.vol().read_at(at, &mut buf).unwrap();
                prop_assert!(
                    buf == self.model.read(self.model.head, at, len),
                    "read at {} len {} differs",
                    at,
                    len
                );
            }
            Op::Reopen => {
                self.vol = None;
                self.engine = None;
                let engine = Engine::open(&self.root).unwrap();
                self.vol = Some(engine.open_volume("vol").unwrap());
                self.engine = Some(engine);
            }
        }
        Ok(())
    }

    fn check_everything(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        let vol = self.vol();
        prop_assert_eq!(vol.size(), m.size);
        let mut buf = vec![0xEE; m.size as usize];
        vol.read_at(0, &mut buf).unwrap();
        prop_assert!(buf == m.read(m.head, 0, m.size), "head view differs");
        prop_assert_eq!(
            vol.head_changed_bytes().unwrap(),
            m.layers[&m.head].sectors.len() as u64 * S
        );
        let live: BTreeSet<u64> = m
            .chain(m.head)
            .iter()
            .flat_map(|id| m.layers[id].sectors.keys().copied())
            .collect();
        prop_assert_eq!(
            vol.allocated_extents(2 * S).unwrap(),
            blocks_of(&live, 2 * S, m.size)
        );

        let infos = vol.list_snapshots().unwrap();
        prop_assert_eq!(infos.len(), m.snaps.len());
        let by_id: HashMap<usize, &str> =
            m.snaps.iter().map(|(n, id, _)| (*id, n.as_str())).collect();
        for (name, id, snap_size) in &m.snaps {
            let info = infos.iter().find(|i| &i.name == name).unwrap();
            prop_assert_eq!(info.size, m.layers[id].sectors.len() as u64 * S);
            prop_assert_eq!(info.volume_size, *snap_size);
            let parent = m
                .visible_parent(*id)
                .and_then(|p| by_id.get(&p).map(|s| s.to_string()));
            prop_assert_eq!(&info.parent, &parent);
            prop_assert_eq!(info.head_is_child, m.visible_parent(m.head) == Some(*id));
            let mut children: Vec<String> = m
                .snaps
                .iter()
                .filter(|(_, c, _)| m.visible_parent(*c) == Some(*id))
                .map(|(n, _, _)| n.clone())
                .collect();
            children.sort();
            let mut got_children = info.children.clone();
            got_children.sort();
            prop_assert_eq!(got_children, children);
            let reader = vol.snapshot_reader(name).unwrap();
            prop_assert_eq!(reader.size(), *snap_size);
            let mut view = vec![0xEE; *snap_size as usize];
            reader.read_at(0, &mut view).unwrap();
            prop_assert!(
                view == m.read(*id, 0, *snap_size),
                "view of snapshot {} differs",
                name
            );
        }

        // Change tracking, for every ordered pair and for full scans, at two block sizes.
        for block in [S, 3 * S] {
            for (to, to_id, to_size) in &m.snaps {
                let full = vol.changed_extents(None, to, block).unwrap();
                let want = blocks_of(&m.changed_sectors(None, *to_id).unwrap(), block, *to_size);
                prop_assert_eq!(&full, &want, "full extents of {}", to);
                let source = vol.backup_source(None, to).unwrap();
                prop_assert_eq!(&source.extents(block).unwrap(), &want);
                for (from, from_id, from_size) in &m.snaps {
                    let got = vol.changed_extents(Some(from), to, block);
                    match m.changed_sectors(Some(*from_id), *to_id) {
                        Some(sectors) => {
                            let got = got.unwrap();
                            prop_assert_eq!(
                                &got,
                                &blocks_of(&sectors, block, *to_size),
                                "diff {} -> {}",
                                from,
                                to
                            );
                            // Soundness, independent of the presence model: every sector whose
                            // content differs between the two views is inside a changed block.
                            for n in 0..to_size / S {
                                let old = if n * S < *from_size {
                                    m.sector(*from_id, n)
                                } else {
                                    vec![0; S as usize]
                                };
                                if old != m.sector(*to_id, n) {
                                    prop_assert!(
                                        got.iter().any(|e| e.offset <= n * S && n * S < e.end()),
                                        "sector {} changed {} -> {} but not listed",
                                        n,
                                        from,
                                        to
                                    );
                                }
                            }
                        }
                        None => {
                            let refused = matches!(got, Err(Error::NotAncestor { .. }));
                            prop_assert!(refused, "diff {} -> {} must be refused", from, to);
                            prop_assert!(vol.backup_source(Some(from), to).is_err());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("ENGINE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn volume_matches_model(
        size_sectors in 4u64..24,
        backing in proptest::option::weighted(0.3, proptest::collection::vec(proptest::option::of(any::<u8>()), 1..30)),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::new(size_sectors, backing);
        for (i, op) in ops.iter().enumerate() {
            h.apply(op)?;
            if i % 8 == 7 {
                h.check_everything()?;
            }
        }
        h.check_everything()?;
    }
}
