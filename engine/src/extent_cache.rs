//! An in-memory copy of a layer's allocated spans, so a read resolves sectors to layers without
//! SEEK_DATA/SEEK_HOLE calls (which also serialise threads on the file position lock).
//!
//! Exactness argument: the map is filled by one full SEEK_DATA scan taken under its write lock,
//! and every later change to the layer's allocation updates it after the file operation, under
//! the same lock. Writes only add sectors (noted outward-aligned), punches only remove
//! whole sectors (noted inward-aligned). A reader racing a punch may still see the sector as
//! present and read zeros from the hole, which is what a punch means: the engine punches only
//! where no lower layer holds data. Change tracking never uses this map; it asks the
//! filesystem.

use std::collections::BTreeMap;

use crate::sector::{SECTOR, Span, align_down, align_up};

/// Above this many separate spans a layer stops being cached (falls back to SEEK_DATA), which
/// bounds memory to a few MiB per layer on badly fragmented volumes.
pub const MAX_SPANS: usize = 1 << 17;

#[derive(Debug, Default)]
pub enum ExtentCache {
    #[default]
    Unloaded,
    Loaded(SpanMap),
    Disabled,
}

/// Sorted, non-overlapping, non-touching spans keyed by start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpanMap {
    spans: BTreeMap<u64, u64>,
}

impl SpanMap {
    pub fn from_spans(spans: &[Span]) -> SpanMap {
        let mut m = SpanMap::default();
        for &(s, e) in spans {
            m.insert(s, e);
        }
        m
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The parts of `[start, end)` covered, sorted.
    pub fn query(&self, start: u64, end: u64) -> Vec<Span> {
        let mut out = Vec::new();
        if let Some((&s, &e)) = self.spans.range(..=start).next_back()
            && e > start
        {
            out.push((s.max(start), e.min(end)));
        }
        for (&s, &e) in self.spans.range(start..end) {
            if s == start && !out.is_empty() {
                continue;
            }
            out.push((s, e.min(end)));
        }
        out.retain(|(s, e)| s < e);
        out
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        if let Some((&ps, &pe)) = self.spans.range(..=s).next_back()
            && pe >= s
        {
            s = ps;
            e = e.max(pe);
        }
        let inside: Vec<u64> = self.spans.range(s..=e).map(|(k, _)| *k).collect();
        for k in inside {
            if let Some(ke) = self.spans.remove(&k) {
                e = e.max(ke);
            }
        }
        self.spans.insert(s, e);
    }

    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut keep = Vec::new();
        let first = self
            .spans
            .range(..start)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(start);
        let hit: Vec<(u64, u64)> = self
            .spans
            .range(first..end)
            .map(|(k, v)| (*k, *v))
            .collect();
        for (s, e) in hit {
            if e <= start {
                continue;
            }
            self.spans.remove(&s);
            if s < start {
                keep.push((s, start));
            }
            if e > end {
                keep.push((end, e));
            }
        }
        for (s, e) in keep {
            self.spans.insert(s, e);
        }
    }
}

impl ExtentCache {
    /// A write (or zero-write) of `[start, end)` allocated its sectors.
    pub fn note_data(&mut self, start: u64, end: u64) {
        if let ExtentCache::Loaded(m) = self {
            m.insert(align_down(start, SECTOR), align_up(end, SECTOR));
            if m.len() > MAX_SPANS {
                *self = ExtentCache::Disabled;
            }
        }
    }

    /// A punch of `[start, end)` freed its whole sectors.
    pub fn note_hole(&mut self, start: u64, end: u64) {
        if let ExtentCache::Loaded(m) = self {
            m.remove(align_up(start, SECTOR), align_down(end, SECTOR));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The map agrees with a plain set of sectors under any inserts and removes.
        #[test]
        fn span_map_matches_a_sector_set(ops in proptest::collection::vec((any::<bool>(), 0u64..40, 0u64..10), 0..60),
                                         q in (0u64..50, 0u64..50)) {
            let mut map = SpanMap::default();
            let mut set = std::collections::BTreeSet::new();
            for (add, s, n) in ops {
                if add { map.insert(s, s + n); set.extend(s..s + n); }
                else { map.remove(s, s + n); for x in s..s + n { set.remove(&x); } }
            }
            let (qs, qe) = (q.0.min(q.1), q.0.max(q.1));
            let got: Vec<u64> = map.query(qs, qe).iter().flat_map(|&(s, e)| s..e).collect();
            let want: Vec<u64> = set.range(qs..qe).copied().collect();
            prop_assert_eq!(got, want);
            // Normal form: sorted, non-touching.
            let all = map.query(0, 100);
            for w in all.windows(2) { prop_assert!(w[0].1 < w[1].0); }
        }
    }
}
