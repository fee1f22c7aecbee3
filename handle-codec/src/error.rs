//! The decode error: one variant per way a handle can be wrong, each message naming the part and the fix.

use std::fmt;

use crate::backing_image::SourceType;
use crate::name::NameError;
use crate::values::{ChecksumError, UrlError};

/// The scheme of a path-style handle, as written (so messages quote what the user wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathScheme {
    /// `snap://`
    Snap,
    /// `bak://`
    Bak,
    /// `bs://`, the legacy spelling of `bak://`.
    Bs,
}

impl PathScheme {
    /// What the second path part names.
    pub fn id_label(self) -> &'static str {
        match self {
            PathScheme::Snap => "snapshot",
            PathScheme::Bak | PathScheme::Bs => "backup",
        }
    }

    /// The scheme text.
    pub fn as_str(self) -> &'static str {
        match self {
            PathScheme::Snap => "snap",
            PathScheme::Bak => "bak",
            PathScheme::Bs => "bs",
        }
    }
}

impl fmt::Display for PathScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a snapshot handle could not be decoded.
///
/// Values quoted from the input are cut to [`SNIPPET_CHARS`] characters so that a huge handle cannot
/// make a huge message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// [`crate::decode_bytes`] got bytes that are not UTF-8.
    #[error(
        "snapshot handle is not valid UTF-8 (first bad byte at offset {valid_up_to}): write the handle as UTF-8 text, percent-encoding anything unusual"
    )]
    NotUtf8 {
        /// Bytes before the first invalid one.
        valid_up_to: usize,
    },
    /// The handle is the empty string.
    #[error(
        "snapshot handle is empty: write snap://<volume>/<snapshot>, bak://<volume>/<backup> or bi://backing?<query>"
    )]
    Empty,
    /// A raw ASCII control character (newline, tab, NUL, DEL, ...) anywhere in the handle.
    #[error(
        "snapshot handle contains a control character at byte {offset}: remove it (a stray newline or tab from copy-and-paste?) or percent-encode it in a parameter value"
    )]
    ControlCharacter {
        /// Byte offset in the handle.
        offset: usize,
    },
    /// No `<type>://` prefix.
    #[error(
        "snapshot handle {handle:?} has no type prefix: start it with snap://, bak:// or bi:// (bs:// is the legacy spelling of bak://)"
    )]
    MissingScheme {
        /// The handle (cut).
        handle: String,
    },
    /// A prefix other than `snap`, `bak`, `bs` or `bi`.
    #[error(
        "invalid CSI snapshot type {found:?} in the snapshot handle: use snap://<volume>/<snapshot>, bak://<volume>/<backup> (legacy bs://) or bi://backing?<query>; types are lowercase"
    )]
    UnknownType {
        /// The prefix found (cut).
        found: String,
    },
    /// `snap:///id`, `bak://` and the like.
    #[error(
        "{scheme}:// handle has an empty volume name: write {scheme}://<volume>/<{}>",
        scheme.id_label()
    )]
    EmptyVolume {
        /// The scheme as written.
        scheme: PathScheme,
    },
    /// `snap://volume` with no `/`.
    #[error(
        "{scheme}:// handle {handle:?} has no '/<{}>' after the volume name: write {scheme}://<volume>/<{}>",
        scheme.id_label(),
        scheme.id_label()
    )]
    MissingId {
        /// The scheme as written.
        scheme: PathScheme,
        /// The handle (cut).
        handle: String,
    },
    /// `snap://volume/` with nothing after the `/`.
    #[error(
        "{scheme}:// handle has an empty {} name after the volume: write {scheme}://<volume>/<{}>",
        scheme.id_label(),
        scheme.id_label()
    )]
    EmptyId {
        /// The scheme as written.
        scheme: PathScheme,
    },
    /// `snap://volume/id/more`: Longhorn silently drops `/more`; we refuse instead of guessing.
    #[error(
        "{scheme}:// handle has extra path segments {extra:?} after the {} name: a handle is exactly {scheme}://<volume>/<{}>; write a '/' inside a name as %2F",
        scheme.id_label(),
        scheme.id_label()
    )]
    ExtraPathSegments {
        /// The scheme as written.
        scheme: PathScheme,
        /// Everything after the id, starting with `/` (cut).
        extra: String,
    },
    /// A `%` not followed by two hex digits.
    #[error(
        "{part} has an invalid percent-escape at byte {offset}: '%' must be followed by two hex digits; write a literal '%' as %25"
    )]
    InvalidPercentEncoding {
        /// Which part, e.g. `volume name` or `value of query parameter url`.
        part: String,
        /// Byte offset of the `%` within that part.
        offset: usize,
    },
    /// Escapes that decode to bytes which are not UTF-8.
    #[error(
        "{part} percent-decodes to bytes that are not UTF-8: escape UTF-8 text only (é is %C3%A9)"
    )]
    InvalidUtf8 {
        /// Which part.
        part: String,
    },
    /// A name that breaks the name rules (see [`crate::Name`] and [`crate::ObjectName`]).
    #[error("{part} {value:?} {reason}")]
    InvalidName {
        /// Which part, e.g. `volume name`.
        part: String,
        /// The unescaped name (cut).
        value: String,
        /// The rule broken.
        reason: NameError,
    },
    /// `bi://` followed by something other than `backing`.
    #[error(
        "backing-image handle must start with bi://backing?, found {found:?} between bi:// and '?': write bi://backing?backingImage=<name>&backingImageDataSourceType=<type>&..."
    )]
    BackingImageHost {
        /// What stood there (cut).
        found: String,
    },
    /// A `#` in a `bi://` handle: Go's URL parser would cut the rest off as a fragment.
    #[error(
        "backing-image handle contains '#' at byte {offset}, which would end the query: write a literal '#' in a value as %23"
    )]
    FragmentNotAllowed {
        /// Byte offset in the handle.
        offset: usize,
    },
    /// A `;` in a query pair: Go (and so Longhorn) drops such pairs silently.
    #[error(
        "query parameter {pair:?} contains ';': separate parameters with '&' and write a literal ';' as %3B"
    )]
    SemicolonInQuery {
        /// The `key=value` pair (cut).
        pair: String,
    },
    /// `=value` with nothing before the `=`.
    #[error("query parameter {pair:?} has an empty name: write <name>=<value>")]
    EmptyParameterName {
        /// The pair (cut).
        pair: String,
    },
    /// The same key twice: Longhorn would silently use the first.
    #[error("query parameter {key:?} appears more than once: keep exactly one")]
    DuplicateParameter {
        /// The key (cut).
        key: String,
    },
    /// A required backing-image parameter is absent.
    #[error("backing-image handle lacks the required parameter {key}: add &{key}=<{hint}>")]
    MissingParameter {
        /// The key.
        key: &'static str,
        /// What its value is.
        hint: &'static str,
    },
    /// A required backing-image parameter is present but empty.
    #[error("backing-image parameter {key} is empty: give it a value ({hint})")]
    EmptyParameter {
        /// The key.
        key: &'static str,
        /// What its value is.
        hint: &'static str,
    },
    /// `backingImageDataSourceType` names no known source.
    #[error(
        "backingImageDataSourceType {found:?} is unknown: use download, export-from-volume, upload, restore or clone"
    )]
    UnknownSourceType {
        /// The value (cut).
        found: String,
    },
    /// A parameter that belongs to another source type, e.g. `url` on `export-from-volume`.
    #[error(
        "parameter {key} does not apply to backingImageDataSourceType {source_type}: remove it, or change the source type"
    )]
    ParameterNotForSourceType {
        /// The key.
        key: &'static str,
        /// The handle's source type.
        source_type: SourceType,
    },
    /// `backingImageChecksum` or `checksum` is not 128 lowercase hex digits.
    #[error("{key} {reason}")]
    BadChecksum {
        /// The key.
        key: &'static str,
        /// The rule broken.
        reason: ChecksumError,
    },
    /// `export-type` other than `raw` or `qcow2`.
    #[error(
        "export-type {found:?} is invalid: use raw or qcow2 (omit it, or leave it empty, for raw)"
    )]
    BadExportType {
        /// The value (cut).
        found: String,
    },
    /// A download `url` with a scheme other than http/https.
    #[error("{key} {value:?} {reason}")]
    NonHttpUrl {
        /// The key.
        key: &'static str,
        /// The URL (cut).
        value: String,
        /// Always [`UrlError::NotHttp`].
        reason: UrlError,
    },
    /// A URL parameter that is not a URL at all (or holds whitespace).
    #[error(
        "{key} {value:?} {reason}; inside a handle, percent-encode the URL (url=https%3A%2F%2F...)"
    )]
    InvalidUrl {
        /// The key.
        key: &'static str,
        /// The URL (cut).
        value: String,
        /// The rule broken.
        reason: UrlError,
    },
    /// `concurrent-limit` that is not a whole number.
    #[error("concurrent-limit {found:?} is not a whole number: write e.g. concurrent-limit=2")]
    BadConcurrentLimit {
        /// The value (cut).
        found: String,
    },
    /// `encryption` other than `encrypt`, `decrypt` or `ignore`.
    #[error("encryption {found:?} is invalid: use encrypt, decrypt or ignore")]
    BadEncryption {
        /// The value (cut).
        found: String,
    },
}

/// Longest quotation of input inside an error message, in characters.
pub const SNIPPET_CHARS: usize = 120;

/// Cuts `text` for quoting in a message.
pub(crate) fn snippet(text: &str) -> String {
    match text.char_indices().nth(SNIPPET_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}... ({} bytes in all)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_cut() {
        assert_eq!(snippet("short"), "short");
        let long = "é".repeat(500);
        let cut = snippet(&long);
        assert!(cut.starts_with(&"é".repeat(SNIPPET_CHARS)));
        assert!(cut.ends_with("... (1000 bytes in all)"));
    }
}
