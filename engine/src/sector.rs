//! Sector arithmetic and sorted span sets (pure: no I/O).
//!
//! A span is a half-open byte range `(start, end)`. Span lists are kept sorted and
//! non-overlapping; adjacent spans are merged.

/// Size of a sector: the unit in which layers hold data.
pub const SECTOR: u64 = 4096;

/// A half-open byte range `[start, end)`.
pub type Span = (u64, u64);

pub fn align_down(x: u64, to: u64) -> u64 {
    x - x % to
}

pub fn align_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// Appends `span` to a sorted list, merging it with the last span when they touch.
pub fn push_span(list: &mut Vec<Span>, span: Span) {
    if span.0 >= span.1 {
        return;
    }
    if let Some(last) = list.last_mut()
        && span.0 <= last.1
    {
        last.1 = last.1.max(span.1);
        return;
    }
    list.push(span);
}

/// Union of two sorted span lists.
pub fn union(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut all: Vec<Span> = a.iter().chain(b.iter()).copied().collect();
    all.sort_unstable();
    let mut out = Vec::with_capacity(all.len());
    for s in all {
        push_span(&mut out, s);
    }
    out
}

/// `a` minus `b`, both sorted.
pub fn subtract(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(start, end) in a {
        let mut cur = start;
        while j < b.len() && b[j].1 <= cur {
            j += 1;
        }
        let mut k = j;
        while cur < end && k < b.len() && b[k].0 < end {
            if b[k].0 > cur {
                push_span(&mut out, (cur, b[k].0));
            }
            cur = cur.max(b[k].1);
            k += 1;
        }
        if cur < end {
            push_span(&mut out, (cur, end));
        }
    }
    out
}

/// Widens every span to `block` boundaries, merges, and clips to `limit`.
pub fn align_spans(spans: &[Span], block: u64, limit: u64) -> Vec<Span> {
    let mut out = Vec::new();
    for &(s, e) in spans {
        let s = align_down(s, block);
        let e = align_up(e, block).min(limit);
        if s < e {
            push_span(&mut out, (s, e));
        }
    }
    out
}

/// Total bytes covered by a span list.
pub fn total_len(spans: &[Span]) -> u64 {
    spans.iter().map(|(s, e)| e - s).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subtract_cuts_holes_and_keeps_rest() {
        let a = [(0, 100), (200, 300)];
        let b = [(10, 20), (50, 250), (290, 400)];
        assert_eq!(subtract(&a, &b), vec![(0, 10), (20, 50), (250, 290)]);
        assert_eq!(subtract(&a, &[]), a.to_vec());
        assert_eq!(subtract(&[], &b), Vec::<Span>::new());
    }

    #[test]
    fn union_merges_touching_spans() {
        assert_eq!(
            union(&[(0, 10), (30, 40)], &[(10, 20), (35, 50)]),
            vec![(0, 20), (30, 50)]
        );
    }

    #[test]
    fn align_widens_and_clips() {
        assert_eq!(
            align_spans(&[(4096, 8192), (20_000, 20_001)], 16384, 30_000),
            vec![(0, 30_000)]
        );
        assert_eq!(align_spans(&[(4096, 8192)], 8192, 100_000), vec![(0, 8192)]);
    }
}
