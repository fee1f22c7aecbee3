//! Target credentials: the keys of a BackupTarget's credential Secret (or of the environment,
//! for the CLI), validated once so that a typo fails with the key's name instead of as an
//! opaque signature error from the server.

use std::collections::BTreeMap;
use std::fmt;

pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const AWS_ENDPOINTS: &str = "AWS_ENDPOINTS";
pub const AWS_CERT: &str = "AWS_CERT";
pub const VIRTUAL_HOSTED_STYLE: &str = "VIRTUAL_HOSTED_STYLE";
pub const HTTP_PROXY: &str = "HTTP_PROXY";
pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
pub const NO_PROXY: &str = "NO_PROXY";

/// Every key this module reads, in the order the spec lists them.
pub const CREDENTIAL_KEYS: [&str; 8] = [
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_ENDPOINTS,
    AWS_CERT,
    VIRTUAL_HOSTED_STYLE,
    HTTP_PROXY,
    HTTPS_PROXY,
    NO_PROXY,
];

/// Why a set of credentials was refused. Messages name the key and never show secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "credential {key} has {what}; remove it (a Secret made with `echo` instead of `printf` or `echo -n` often carries a newline)"
    )]
    Whitespace {
        key: &'static str,
        what: &'static str,
    },
    #[error("credential {key} is not valid UTF-8")]
    NotUtf8 { key: &'static str },
    #[error("credential {key} is required for {scheme}:// targets")]
    Missing {
        key: &'static str,
        scheme: &'static str,
    },
    #[error("credential {key} must be \"true\" or \"false\", got {value:?}")]
    NotBoolean { key: &'static str, value: String },
    #[error("credential {key} must be an http:// or https:// URL, got {value:?}")]
    NotHttpUrl { key: &'static str, value: String },
    #[error(
        "credential AWS_CERT holds no PEM certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)"
    )]
    NoCertificate,
}

/// Validated target settings. `Debug` hides the secret key.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Custom S3 endpoint (`AWS_ENDPOINTS`), e.g. `http://minio.ns:9000`.
    pub endpoint: Option<String>,
    /// PEM bundle trusted in addition to the system roots (`AWS_CERT`).
    pub ca_bundle: Option<String>,
    /// `VIRTUAL_HOSTED_STYLE`, if given.
    pub virtual_hosted_style: Option<bool>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("ca_bundle", &self.ca_bundle.as_ref().map(|c| c.len()))
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("http_proxy", &self.http_proxy)
            .field("https_proxy", &self.https_proxy)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl Credentials {
    /// Read the known keys from a key → value map (a Secret's `data`, already base64-decoded).
    /// Unknown keys are ignored (a Secret may serve other tools too); empty values count as
    /// absent; a value with leading or trailing whitespace is refused, naming the key.
    /// `AWS_CERT` is exempt from the whitespace rule: a PEM file ends with a newline
    /// (Longhorn refused that too and had to undo it, longhorn/longhorn#7159).
    pub fn from_map<K, V>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, CredentialsError>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        for (key, value) in entries {
            let Some(key) = CREDENTIAL_KEYS.iter().copied().find(|k| *k == key.as_ref()) else {
                continue;
            };
            let value = std::str::from_utf8(value.as_ref())
                .map_err(|_| CredentialsError::NotUtf8 { key })?;
            if value.is_empty() {
                continue;
            }
            if key != AWS_CERT {
                check_whitespace(key, value)?;
            }
            values.insert(key, value.to_string());
        }
        let mut take = |key| values.remove(key);
        let credentials = Self {
            access_key_id: take(AWS_ACCESS_KEY_ID),
            secret_access_key: take(AWS_SECRET_ACCESS_KEY),
            endpoint: take(AWS_ENDPOINTS),
            ca_bundle: take(AWS_CERT),
            virtual_hosted_style: take(VIRTUAL_HOSTED_STYLE)
                .map(|v| parse_bool(VIRTUAL_HOSTED_STYLE, &v))
                .transpose()?,
            http_proxy: take(HTTP_PROXY),
            https_proxy: take(HTTPS_PROXY),
            no_proxy: take(NO_PROXY),
        };
        for (key, value) in [
            (AWS_ENDPOINTS, &credentials.endpoint),
            (HTTP_PROXY, &credentials.http_proxy),
            (HTTPS_PROXY, &credentials.https_proxy),
        ] {
            if let Some(value) = value {
                check_http_url(key, value)?;
            }
        }
        if let Some(bundle) = &credentials.ca_bundle
            && !bundle.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(CredentialsError::NoCertificate);
        }
        Ok(credentials)
    }

    /// Read the known keys from the process environment (the CLI's way of taking a Secret).
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_map(
            CREDENTIAL_KEYS
                .iter()
                .filter_map(|key| std::env::var_os(key).map(|v| (*key, v.into_encoded_bytes()))),
        )
    }

    /// Check that the keys `scheme` needs are present.
    pub fn require_for(&self, scheme: &'static str) -> Result<(), CredentialsError> {
        if scheme == "s3" {
            if self.access_key_id.is_none() {
                return Err(CredentialsError::Missing {
                    key: AWS_ACCESS_KEY_ID,
                    scheme,
                });
            }
            if self.secret_access_key.is_none() {
                return Err(CredentialsError::Missing {
                    key: AWS_SECRET_ACCESS_KEY,
                    scheme,
                });
            }
        }
        Ok(())
    }
}

fn check_whitespace(key: &'static str, value: &str) -> Result<(), CredentialsError> {
    let what = match (value.chars().next(), value.chars().last()) {
        (Some(c), _) if c == '\n' || c == '\r' => "a leading newline",
        (Some(c), _) if c.is_whitespace() => "leading whitespace",
        (_, Some(c)) if c == '\n' || c == '\r' => "a trailing newline",
        (_, Some(c)) if c.is_whitespace() => "trailing whitespace",
        _ => return Ok(()),
    };
    Err(CredentialsError::Whitespace { key, what })
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, CredentialsError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(CredentialsError::NotBoolean {
            key,
            value: value.to_string(),
        }),
    }
}

fn check_http_url(key: &'static str, value: &str) -> Result<(), CredentialsError> {
    let bad = || CredentialsError::NotHttpUrl {
        key,
        value: value.to_string(),
    };
    let parsed = url::Url::parse(value).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn every_key_is_read() {
        let creds = Credentials::from_map([
            (AWS_ACCESS_KEY_ID, "AKID"),
            (AWS_SECRET_ACCESS_KEY, "s3cr3t"),
            (AWS_ENDPOINTS, "https://minio.ns:9000"),
            (AWS_CERT, PEM),
            (VIRTUAL_HOSTED_STYLE, "true"),
            (HTTP_PROXY, "http://proxy:3128"),
            (HTTPS_PROXY, "http://proxy:3129"),
            (NO_PROXY, "localhost,.svc"),
            ("CIFS_USERNAME", "ignored"),
        ])
        .unwrap();
        assert_eq!(creds.access_key_id.as_deref(), Some("AKID"));
        assert_eq!(creds.secret_access_key.as_deref(), Some("s3cr3t"));
        assert_eq!(creds.endpoint.as_deref(), Some("https://minio.ns:9000"));
        assert_eq!(creds.ca_bundle.as_deref(), Some(PEM));
        assert_eq!(creds.virtual_hosted_style, Some(true));
        assert_eq!(creds.http_proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(creds.https_proxy.as_deref(), Some("http://proxy:3129"));
        assert_eq!(creds.no_proxy.as_deref(), Some("localhost,.svc"));
        assert!(
            !format!("{creds:?}").contains("s3cr3t"),
            "Debug leaks the secret"
        );
    }

    #[test]
    fn surrounding_whitespace_is_refused_naming_the_key() {
        for (value, what) in [
            (" AKID", "leading whitespace"),
            ("AKID ", "trailing whitespace"),
            ("AKID\n", "a trailing newline"),
            ("\nAKID", "a leading newline"),
            ("AKID\t", "trailing whitespace"),
        ] {
            let err = Credentials::from_map([(AWS_SECRET_ACCESS_KEY, value)]).unwrap_err();
            assert_eq!(
                err,
                CredentialsError::Whitespace {
                    key: AWS_SECRET_ACCESS_KEY,
                    what
                }
            );
            assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"));
            assert!(!err.to_string().contains("AKID"), "message shows the value");
        }
    }

    #[test]
    fn malformed_values_are_refused_naming_the_key() {
        let err = Credentials::from_map([(VIRTUAL_HOSTED_STYLE, "yes")]).unwrap_err();
        assert!(matches!(
            err,
            CredentialsError::NotBoolean {
                key: VIRTUAL_HOSTED_STYLE,
                ..
            }
        ));
        let err = Credentials::from_map([(AWS_ENDPOINTS, "minio:9000")]).unwrap_err();
        assert!(matches!(
            err,
            CredentialsError::NotHttpUrl {
                key: AWS_ENDPOINTS,
                ..
            }
        ));
        let err = Credentials::from_map([(HTTPS_PROXY, "socks5://p:1")]).unwrap_err();
        assert!(matches!(
            err,
            CredentialsError::NotHttpUrl {
                key: HTTPS_PROXY,
                ..
            }
        ));
        let err = Credentials::from_map([(AWS_CERT, "not a pem")]).unwrap_err();
        assert_eq!(err, CredentialsError::NoCertificate);
        let err = Credentials::from_map([(AWS_ACCESS_KEY_ID, &[0xff_u8, 0xfe][..])]).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::NotUtf8 {
                key: AWS_ACCESS_KEY_ID
            }
        );
    }

    #[test]
    fn s3_needs_both_keys_and_empty_values_count_as_absent() {
        let creds =
            Credentials::from_map([(AWS_ACCESS_KEY_ID, "AKID"), (AWS_SECRET_ACCESS_KEY, "")])
                .unwrap();
        assert_eq!(
            creds.require_for("s3").unwrap_err(),
            CredentialsError::Missing {
                key: AWS_SECRET_ACCESS_KEY,
                scheme: "s3"
            }
        );
        assert_eq!(
            Credentials::default().require_for("s3").unwrap_err(),
            CredentialsError::Missing {
                key: AWS_ACCESS_KEY_ID,
                scheme: "s3"
            }
        );
        assert!(Credentials::default().require_for("file").is_ok());
        assert!(Credentials::default().require_for("nfs").is_ok());
    }
}
