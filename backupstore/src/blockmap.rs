//! Block-map logic (pure: no I/O): validating a backup's map, overlaying changed blocks on the
//! previous map, and the walk that turns two maps into an incremental restore plan.

use std::cmp::Ordering;

use crate::format::BlockMapping;
use crate::names::is_checksum;

/// Checks that a map is usable: offsets non-negative, multiples of `block_size`, strictly
/// increasing, and checksums 64 lowercase hex. Returns the first problem found.
pub fn validate(map: &[BlockMapping], block_size: u64) -> Result<(), String> {
    let mut last: Option<i64> = None;
    for b in map {
        if b.offset < 0 || !(b.offset as u64).is_multiple_of(block_size) {
            return Err(format!(
                "offset {} is not a multiple of the block size {block_size}",
                b.offset
            ));
        }
        if let Some(prev) = last
            && b.offset <= prev
        {
            return Err(format!(
                "offsets are not strictly increasing ({} after {prev})",
                b.offset
            ));
        }
        if !is_checksum(&b.block_checksum) {
            return Err(format!(
                "block checksum {:?} at offset {} is not 64 hex characters",
                b.block_checksum, b.offset
            ));
        }
        last = Some(b.offset);
    }
    Ok(())
}

/// The previous map overlaid by `changed` (both sorted by offset): a changed offset replaces the
/// previous entry, every other previous entry is carried over.
pub fn overlay(previous: &[BlockMapping], changed: &[BlockMapping]) -> Vec<BlockMapping> {
    let mut out = Vec::with_capacity(previous.len() + changed.len());
    let (mut p, mut c) = (0, 0);
    while p < previous.len() && c < changed.len() {
        match previous[p].offset.cmp(&changed[c].offset) {
            Ordering::Less => {
                out.push(previous[p].clone());
                p += 1;
            }
            Ordering::Equal => {
                out.push(changed[c].clone());
                p += 1;
                c += 1;
            }
            Ordering::Greater => {
                out.push(changed[c].clone());
                c += 1;
            }
        }
    }
    out.extend_from_slice(&previous[p..]);
    out.extend_from_slice(&changed[c..]);
    out
}

/// One step of an incremental restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStep {
    /// The block at `offset` is new or changed: fetch `checksum` and write it there.
    Fetch { offset: u64, checksum: String },
    /// The block at `offset` is gone in the new backup: make it read as zeros.
    Zero { offset: u64 },
}

/// Walks the old and new maps together (both sorted by offset): a changed or new offset is
/// fetched, an offset gone is zeroed, an unchanged checksum costs nothing.
pub fn incremental_steps(old: &[BlockMapping], new: &[BlockMapping]) -> Vec<RestoreStep> {
    let mut steps = Vec::new();
    let (mut o, mut n) = (0, 0);
    let fetch = |b: &BlockMapping| RestoreStep::Fetch {
        offset: b.offset as u64,
        checksum: b.block_checksum.clone(),
    };
    while o < old.len() || n < new.len() {
        let ord = match (old.get(o), new.get(n)) {
            (Some(a), Some(b)) => a.offset.cmp(&b.offset),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                steps.push(RestoreStep::Zero {
                    offset: old[o].offset as u64,
                });
                o += 1;
            }
            Ordering::Greater => {
                steps.push(fetch(&new[n]));
                n += 1;
            }
            Ordering::Equal => {
                if old[o].block_checksum != new[n].block_checksum {
                    steps.push(fetch(&new[n]));
                }
                o += 1;
                n += 1;
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn m(offset: i64, c: char) -> BlockMapping {
        BlockMapping {
            offset,
            block_checksum: c.to_string().repeat(64),
        }
    }

    #[test]
    fn overlay_replaces_and_carries_over() {
        let prev = [m(0, 'a'), m(2, 'b'), m(6, 'c')];
        let changed = [m(2, 'd'), m(4, 'e'), m(8, 'f')];
        assert_eq!(
            overlay(&prev, &changed),
            vec![m(0, 'a'), m(2, 'd'), m(4, 'e'), m(6, 'c'), m(8, 'f')]
        );
    }

    #[test]
    fn validate_rejects_bad_maps() {
        assert!(validate(&[m(0, 'a'), m(2, 'b')], 2).is_ok());
        assert!(validate(&[m(2, 'a'), m(2, 'b')], 2).is_err());
        assert!(validate(&[m(3, 'a')], 2).is_err());
        assert!(validate(&[m(-2, 'a')], 2).is_err());
        assert!(validate(&[m(0, 'A')], 2).is_err());
    }

    fn map_strategy() -> impl Strategy<Value = BTreeMap<i64, char>> {
        prop::collection::btree_map(0i64..64, prop::sample::select(vec!['a', 'b', 'c']), 0..40)
    }

    fn to_map(m_: &BTreeMap<i64, char>) -> Vec<BlockMapping> {
        m_.iter().map(|(o, c)| m(*o, *c)).collect()
    }

    proptest! {
        /// Applying the steps to a volume holding `old` yields exactly `new`, and nothing
        /// unchanged is fetched.
        #[test]
        fn steps_turn_old_into_new(old in map_strategy(), new in map_strategy()) {
            let mut volume: BTreeMap<u64, String> = to_map(&old)
                .into_iter().map(|b| (b.offset as u64, b.block_checksum)).collect();
            let steps = incremental_steps(&to_map(&old), &to_map(&new));
            for step in &steps {
                match step {
                    RestoreStep::Fetch { offset, checksum } => {
                        prop_assert_ne!(old.get(&(*offset as i64)).map(|c| c.to_string().repeat(64)), Some(checksum.clone()));
                        volume.insert(*offset, checksum.clone());
                    }
                    RestoreStep::Zero { offset } => { volume.remove(offset); }
                }
            }
            let expected: BTreeMap<u64, String> = to_map(&new)
                .into_iter().map(|b| (b.offset as u64, b.block_checksum)).collect();
            prop_assert_eq!(volume, expected);
        }

        /// The overlay holds every changed entry and every previous entry at other offsets.
        #[test]
        fn overlay_is_a_map_union_preferring_changes(prev in map_strategy(), changed in map_strategy()) {
            let got = overlay(&to_map(&prev), &to_map(&changed));
            let mut expected = prev.clone();
            expected.extend(changed.iter().map(|(k, v)| (*k, *v)));
            prop_assert_eq!(got, to_map(&expected));
        }
    }
}
