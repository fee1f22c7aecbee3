//! Percent-escaping of handle parts, strict in both directions.
//!
//! Path parts (`snap://<volume>/<id>`) escape every byte except the RFC 3986 unreserved characters
//! `A-Z a-z 0-9 - . _ ~`. Longhorn names only use `a-z 0-9 - . _`, so Longhorn's strings and ours are
//! byte-identical for every name Longhorn emits, and an escaped handle never contains `/`, `://`, `?`,
//! `#`, `%` or whitespace of its own.
//!
//! Query keys and values use `application/x-www-form-urlencoded` (space as `+`), which Go's
//! `url.ParseQuery`, and therefore Longhorn, reads back unchanged.
//!
//! Unescaping is strict where the usual decoders are lenient: a `%` not followed by two hex digits is an
//! error (not kept as text), and escapes must spell UTF-8.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::form_urlencoded;

/// Bytes escaped in a path part: all but the unreserved characters.
const PATH_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes one path part (a volume, snapshot or backup name).
pub(crate) fn encode_path_part(part: &str) -> Cow<'_, str> {
    utf8_percent_encode(part, PATH_PART).into()
}

/// Escapes one query key or value.
pub(crate) fn encode_query_component(component: &str) -> String {
    form_urlencoded::byte_serialize(component.as_bytes()).collect()
}

/// How a `+` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plus {
    /// In a path part a `+` is itself (as in Longhorn, which does not unescape paths at all).
    Literal,
    /// In a query a `+` is a space (Go's `url.QueryUnescape`).
    Space,
}

/// Why a part could not be unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnescapeError {
    /// `%` at this byte offset is not followed by two hex digits.
    BadEscape { offset: usize },
    /// The escapes decode to bytes that are not UTF-8.
    NotUtf8,
}

/// Unescapes `%XX` (and `+` when `plus` says so). Borrows when nothing needs unescaping.
pub(crate) fn unescape(text: &str, plus: Plus) -> Result<Cow<'_, str>, UnescapeError> {
    let needs_work = text.contains('%') || (plus == Plus::Space && text.contains('+'));
    if !needs_work {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
                let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(UnescapeError::BadEscape { offset: i }),
                }
                i += 3;
            }
            b'+' if plus == Plus::Space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| UnescapeError::NotUtf8)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_escaping_keeps_longhorn_names_verbatim() {
        assert_eq!(encode_path_part("pvc-1_a.b~c"), "pvc-1_a.b~c");
        assert_eq!(encode_path_part("a/b c%d+é"), "a%2Fb%20c%25d%2B%C3%A9");
    }

    #[test]
    fn query_escaping_uses_plus_for_space() {
        assert_eq!(
            encode_query_component("a b+c&d=e;f#g"),
            "a+b%2Bc%26d%3De%3Bf%23g"
        );
    }

    #[test]
    fn unescape_is_strict() {
        assert_eq!(unescape("a%2Fb", Plus::Literal).as_deref(), Ok("a/b"));
        assert_eq!(unescape("a+b", Plus::Literal).as_deref(), Ok("a+b"));
        assert_eq!(unescape("a+b%2b", Plus::Space).as_deref(), Ok("a b+"));
        assert_eq!(
            unescape("ab%2", Plus::Literal),
            Err(UnescapeError::BadEscape { offset: 2 })
        );
        assert_eq!(
            unescape("%zz", Plus::Space),
            Err(UnescapeError::BadEscape { offset: 0 })
        );
        assert_eq!(unescape("%ff", Plus::Space), Err(UnescapeError::NotUtf8));
        assert!(matches!(
            unescape("plain", Plus::Space),
            Ok(Cow::Borrowed("plain"))
        ));
    }
}
