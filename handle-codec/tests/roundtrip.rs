//! Round trip and totality, by property tests.
//!
//! Case count: `PROPTEST_CASES` (default 256). The long run described in the README sets it high.

mod common;

use handle_codec::{SnapshotHandle, decode, decode_bytes};
use proptest::prelude::*;

/// A decoded value must re-encode to text that decodes to the same value, and encoding is canonical.
fn assert_stable(handle: &SnapshotHandle) -> Result<(), TestCaseError> {
    let encoded = handle.encode();
    let again = decode(&encoded);
    prop_assert_eq!(again.as_ref(), Ok(handle), "{}", encoded);
    prop_assert_eq!(again.map(|h| h.encode()), Ok(encoded));
    Ok(())
}

proptest! {
    #[test]
    fn decode_inverts_encode(handle in common::handle()) {
        let encoded = handle.encode();
        prop_assert_eq!(decode(&encoded), Ok(handle.clone()));
        prop_assert_eq!(handle.to_string(), encoded.clone());
        prop_assert_eq!(encoded.parse::<SnapshotHandle>(), Ok(handle));
    }

    /// Escaped handles hold no raw separator of another layer, whatever the names contain.
    #[test]
    fn encoded_handles_are_plain_ascii_without_stray_separators(handle in common::handle()) {
        let encoded = handle.encode();
        prop_assert!(encoded.is_ascii());
        prop_assert!(!encoded.contains(['#', ';', ' ', '\n']));
        prop_assert_eq!(encoded.matches("://").count(), 1);
        if let SnapshotHandle::Snapshot { .. } | SnapshotHandle::Backup { .. } = handle {
            prop_assert_eq!(encoded.matches('/').count(), 3);
        }
    }

    #[test]
    fn decode_never_panics_on_text(text in any::<String>()) {
        if let Ok(handle) = decode(&text) {
            assert_stable(&handle)?;
        }
    }

    #[test]
    fn decode_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        match decode_bytes(&bytes) {
            Ok(handle) => assert_stable(&handle)?,
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(decode_bytes(&bytes), decode(text));
        }
    }

    /// Handle-shaped text reaches the deep parts of the decoder (query keys, source parameters).
    #[test]
    fn decode_is_total_on_handle_like_text(text in common::handle_like_text()) {
        match decode(&text) {
            Ok(handle) => assert_stable(&handle)?,
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    /// Small edits of valid handles: decode either refuses or yields a stable value.
    #[test]
    fn decode_is_total_on_mutated_handles(
        handle in common::handle(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0..3u8), 1..4),
    ) {
        let mut text: Vec<char> = handle.encode().chars().collect();
        for (index, ch, action) in edits {
            let at = index.index(text.len() + 1);
            match action {
                0 => text.insert(at, ch),
                1 if at < text.len() => { text.remove(at); }
                _ if at < text.len() => text[at] = ch,
                _ => text.push(ch),
            }
        }
        let text: String = text.into_iter().collect();
        if let Ok(decoded) = decode(&text) {
            assert_stable(&decoded)?;
        }
    }
}
