//! Validated parameter values of backing-image handles: checksums and URLs.
//!
//! URLs are kept exactly as written (not normalised), because Longhorn hands the text on unchanged;
//! they are only checked.

use std::fmt;

/// Why a checksum is not a SHA-512 digest in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    /// Not 128 characters long.
    #[error("has {len} characters; a SHA-512 checksum is exactly 128 lowercase hex digits")]
    WrongLength {
        /// Length in characters.
        len: usize,
    },
    /// A character other than `0-9 a-f`.
    #[error(
        "contains {ch:?} at position {at}; a SHA-512 checksum is 128 lowercase hex digits (0-9, a-f): write it in lowercase hex"
    )]
    NotLowercaseHex {
        /// The offending character.
        ch: char,
        /// Its character position.
        at: usize,
    },
}

/// A SHA-512 checksum written as 128 lowercase hex digits, as Longhorn stores backing-image checksums.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha512Checksum(String);

impl Sha512Checksum {
    /// Number of hex digits in a checksum.
    pub const HEX_LEN: usize = 128;

    /// Validates `hex`.
    pub fn new(hex: impl Into<String>) -> Result<Self, ChecksumError> {
        let hex = hex.into();
        if let Some((at, ch)) = hex
            .chars()
            .enumerate()
            .find(|&(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
        {
            return Err(ChecksumError::NotLowercaseHex { ch, at });
        }
        if hex.len() != Self::HEX_LEN {
            return Err(ChecksumError::WrongLength { len: hex.len() });
        }
        Ok(Self(hex))
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha512Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a URL parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The value is empty.
    #[error("is empty: give a URL")]
    Empty,
    /// Whitespace or a control character, which URL parsers silently drop or reject.
    #[error("contains {ch:?} at byte {at}: percent-encode it (a space is %20)")]
    Unprintable {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// Not a parseable absolute URL.
    #[error("is not a valid absolute URL ({reason}): write it as http(s)://host/path")]
    Invalid {
        /// The URL parser's explanation.
        reason: String,
    },
    /// A scheme other than http or https.
    #[error(
        "uses the scheme {scheme:?}; backing images download only over http or https: use an http(s):// URL"
    )]
    NotHttp {
        /// The scheme found.
        scheme: String,
    },
}

/// An absolute `http://` or `https://` URL, kept exactly as written.
///
/// ```
/// use handle_codec::HttpUrl;
/// assert!(HttpUrl::new("https://example.com/parrot.qcow2").is_ok());
/// assert!(HttpUrl::new("ftp://example.com/parrot.qcow2").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpUrl {
    /// The text as written; equality and the encoding use it.
    text: String,
    /// The same text parsed, kept so callers need not parse (or handle an error) again.
    parsed: url::Url,
}

impl HttpUrl {
    /// Validates `url`.
    pub fn new(url: impl Into<String>) -> Result<Self, UrlError> {
        let url = url.into();
        check_url_text(&url)?;
        let parsed = url::Url::parse(&url).map_err(|e| UrlError::Invalid {
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::NotHttp {
                scheme: parsed.scheme().to_owned(),
            });
        }
        // The `url` crate forgives `http:host` and `http:\\host`; Go's HTTP client, which Longhorn's
        // downloader uses, does not read them the same way, so insist on the plain form.
        let prefix_len = parsed.scheme().len() + 3;
        let plain = url
            .get(..prefix_len)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(&format!("{}://", parsed.scheme())));
        if !plain {
            return Err(UrlError::Invalid {
                reason: "the scheme must be followed by //".to_owned(),
            });
        }
        Ok(Self { text: url, parsed })
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL parsed (normalised by the `url` crate).
    pub fn parsed(&self) -> &url::Url {
        &self.parsed
    }
}

/// A backup URL of a `restore` backing image (e.g. `s3://bucket@region/?backup=...&volume=...`).
/// Any printable text without whitespace; the backup store checks the rest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupUrl(String);

impl BackupUrl {
    /// Validates `url`.
    pub fn new(url: impl Into<String>) -> Result<Self, UrlError> {
        let url = url.into();
        check_url_text(&url)?;
        Ok(Self(url))
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_url_text(url: &str) -> Result<(), UrlError> {
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if let Some((at, ch)) = url
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(UrlError::Unprintable { ch, at });
    }
    Ok(())
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for BackupUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HttpUrl {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_rules() {
        let good = "ab".repeat(64);
        assert_eq!(Sha512Checksum::new(good.clone()).map(|c| c.0), Ok(good));
        assert_eq!(
            Sha512Checksum::new("ab".repeat(32)),
            Err(ChecksumError::WrongLength { len: 64 })
        );
        assert_eq!(
            Sha512Checksum::new(format!("A{}", "b".repeat(127))),
            Err(ChecksumError::NotLowercaseHex { ch: 'A', at: 0 })
        );
        assert_eq!(
            Sha512Checksum::new("é"),
            Err(ChecksumError::NotLowercaseHex { ch: 'é', at: 0 })
        );
    }

    #[test]
    fn url_rules() {
        assert!(HttpUrl::new("http://h").is_ok());
        assert!(HttpUrl::new("HTTP://h").is_ok());
        assert_eq!(
            HttpUrl::new("http:h"),
            Err(UrlError::Invalid {
                reason: "the scheme must be followed by //".into()
            })
        );
        assert!(HttpUrl::new("https:\\\\h/x").is_err());
        assert!(HttpUrl::new("https://h/a%20b?x=1&y=2#frag").is_ok());
        assert_eq!(HttpUrl::new(""), Err(UrlError::Empty));
        assert_eq!(
            HttpUrl::new("https://h/a b"),
            Err(UrlError::Unprintable { ch: ' ', at: 11 })
        );
        assert_eq!(
            HttpUrl::new("s3://bucket/x"),
            Err(UrlError::NotHttp {
                scheme: "s3".into()
            })
        );
        assert!(matches!(
            HttpUrl::new("no-scheme-here"),
            Err(UrlError::Invalid { .. })
        ));
        assert_eq!(
            HttpUrl::new("https://h/x").map(|u| u.parsed().host_str().map(str::to_owned)),
            Ok(Some("h".to_owned()))
        );
        assert!(BackupUrl::new("s3://bucket@us-east-1/?backup=b&volume=v").is_ok());
        assert_eq!(
            BackupUrl::new("s3://x\n"),
            Err(UrlError::Unprintable { ch: '\n', at: 6 })
        );
    }
}
