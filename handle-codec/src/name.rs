//! Validated names that appear inside handles.
//!
//! Two rules, because handles hold two sorts of names:
//! - [`Name`] refers to something that may live outside Kubernetes (a backup-store directory, an engine
//!   snapshot). It is opaque: any printable text, so a handle written by another tool still decodes. The
//!   codec escapes whatever needs escaping, so every `Name` survives a round trip.
//! - [`ObjectName`] names a Kubernetes object that the operator creates or looks up (a backing image, a
//!   secret): it must be an RFC 1123 subdomain, exactly as the API server demands.

use std::fmt;

/// Longest name accepted, in bytes: the Kubernetes object-name limit. Every name Longhorn emits is an
/// object name, so nothing Longhorn writes is longer.
pub const MAX_NAME_BYTES: usize = 253;

/// Why a string is not a valid [`Name`] or [`ObjectName`]. Messages complete a sentence that starts
/// with the name's role, e.g. `volume name "x" ` + message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is the empty string.
    #[error("is empty: give a name")]
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error(
        "is {len} bytes long; the limit is 253 bytes (the Kubernetes object-name limit): shorten it"
    )]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The name contains a control character (newline, tab, NUL, ...).
    #[error("contains the control character {ch:?} at byte {at}: remove it")]
    ControlCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// The name starts or ends with whitespace, almost always a copy-and-paste accident.
    #[error("starts or ends with whitespace: remove it")]
    SurroundingWhitespace,
    /// A character outside `a-z 0-9 - .` in a Kubernetes object name.
    #[error(
        "contains {ch:?} at byte {at}, which a Kubernetes object name cannot hold: use lowercase letters, digits, '-' and '.'"
    )]
    NotObjectNameCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the name.
        at: usize,
    },
    /// A dot-separated part of a Kubernetes object name is empty or starts/ends with `-`.
    #[error(
        "has a dot-separated part {label:?} that does not start and end with a lowercase letter or digit: fix that part"
    )]
    BadObjectNameLabel {
        /// The offending part (between dots).
        label: String,
    },
}

/// An opaque, printable name inside a handle: a volume, snapshot or backup name, or the
/// `volume-name` of an `export-from-volume` backing image.
///
/// Rules: not empty, at most [`MAX_NAME_BYTES`] bytes, no control characters, no leading or trailing
/// whitespace. Anything else is allowed (`/`, `?`, `%`, spaces, non-ASCII), because such names can come
/// from a backup store written by another tool; the encoder escapes them.
///
/// ```
/// use handle_codec::Name;
/// assert_eq!(Name::new("pvc-0a1b").unwrap().as_str(), "pvc-0a1b");
/// assert!(Name::new("").is_err());
/// assert!(Name::new("bad\nname").is_err());
/// assert!(Name::new("odd/name?with=stuff").is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_printable(&name)?;
        Ok(Self(name))
    }

    /// The name as written (unescaped).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the name, returning the string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The name of a Kubernetes object (an RFC 1123 subdomain): a backing image, or the secret and
/// namespace used when cloning an encrypted backing image.
///
/// Rules: 1 to 253 bytes of `a-z`, `0-9`, `-` and `.`; every dot-separated part starts and ends with a
/// letter or digit.
///
/// ```
/// use handle_codec::ObjectName;
/// assert!(ObjectName::new("test-bi").is_ok());
/// assert!(ObjectName::new("Test_BI").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

impl ObjectName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_printable(&name)?;
        if let Some((at, ch)) = name
            .char_indices()
            .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
        {
            return Err(NameError::NotObjectNameCharacter { ch, at });
        }
        if let Some(label) = name.split('.').find(|label| {
            !(label.starts_with(|c: char| c.is_ascii_alphanumeric())
                && label.ends_with(|c: char| c.is_ascii_alphanumeric()))
        }) {
            return Err(NameError::BadObjectNameLabel {
                label: label.to_owned(),
            });
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the name, returning the string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Rules shared by both name kinds.
fn check_printable(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some((at, ch)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(NameError::ControlCharacter { ch, at });
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(NameError::SurroundingWhitespace);
    }
    Ok(())
}

macro_rules! string_newtype_impls {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<&str> for $ty {
            type Error = NameError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }
    };
}

string_newtype_impls!(Name);
string_newtype_impls!(ObjectName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(
            Name::new("a".repeat(254)),
            Err(NameError::TooLong { len: 254 })
        );
        assert!(Name::new("a".repeat(253)).is_ok());
        assert_eq!(
            Name::new("a\tb"),
            Err(NameError::ControlCharacter { ch: '\t', at: 1 })
        );
        assert_eq!(Name::new(" a"), Err(NameError::SurroundingWhitespace));
        assert_eq!(
            Name::new("a\u{3000}"),
            Err(NameError::SurroundingWhitespace)
        );
        assert!(Name::new("a b/c?d=e&f%g+h#i é 日本").is_ok());
    }

    #[test]
    fn object_name_rules() {
        assert!(ObjectName::new("a").is_ok());
        assert!(ObjectName::new("snapshot-0123.abc").is_ok());
        assert_eq!(
            ObjectName::new("a_b"),
            Err(NameError::NotObjectNameCharacter { ch: '_', at: 1 })
        );
        assert_eq!(
            ObjectName::new("A"),
            Err(NameError::NotObjectNameCharacter { ch: 'A', at: 0 })
        );
        assert_eq!(
            ObjectName::new("-a"),
            Err(NameError::BadObjectNameLabel { label: "-a".into() })
        );
        assert_eq!(
            ObjectName::new("a..b"),
            Err(NameError::BadObjectNameLabel { label: "".into() })
        );
        assert_eq!(
            ObjectName::new("a.b-"),
            Err(NameError::BadObjectNameLabel { label: "b-".into() })
        );
        assert_eq!(ObjectName::new(""), Err(NameError::Empty));
    }
}
