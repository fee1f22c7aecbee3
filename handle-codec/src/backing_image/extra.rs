//! Query parameters of backing-image handles that this crate does not interpret.

use super::keys;

/// Why an extra parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtraParameterError {
    /// The key is empty.
    #[error("extra backing-image parameter has an empty name: give it a name")]
    EmptyKey,
    /// The key is one this crate interprets (see [`keys::RESERVED`]).
    #[error(
        "extra backing-image parameter {key:?} is a known parameter: set the typed field instead"
    )]
    Reserved {
        /// The key.
        key: String,
    },
    /// The key is already present.
    #[error("extra backing-image parameter {key:?} is given twice: keep one")]
    Duplicate {
        /// The key.
        key: String,
    },
}

/// Query parameters this crate does not interpret, kept in their original order so that a handle
/// survives a round trip (Longhorn passes such parameters on to the backing-image data source).
///
/// Keys are non-empty, unique and not in [`keys::RESERVED`]; values are any text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExtraParameters(pub(super) Vec<(String, String)>);

impl ExtraParameters {
    /// No extra parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a parameter.
    pub fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), ExtraParameterError> {
        let key = key.into();
        if key.is_empty() {
            return Err(ExtraParameterError::EmptyKey);
        }
        if keys::RESERVED.contains(&key.as_str()) {
            return Err(ExtraParameterError::Reserved { key });
        }
        if self.get(&key).is_some() {
            return Err(ExtraParameterError::Duplicate { key });
        }
        self.0.push((key, value.into()));
        Ok(())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_parameters_refuse_reserved_empty_and_duplicate_keys() {
        let mut extra = ExtraParameters::new();
        assert_eq!(extra.push("file-type", "qcow2"), Ok(()));
        assert_eq!(
            extra.push("file-type", "raw"),
            Err(ExtraParameterError::Duplicate {
                key: "file-type".into()
            })
        );
        assert_eq!(
            extra.push("url", "x"),
            Err(ExtraParameterError::Reserved { key: "url".into() })
        );
        assert_eq!(extra.push("", "x"), Err(ExtraParameterError::EmptyKey));
        assert_eq!(extra.get("file-type"), Some("qcow2"));
        assert_eq!(extra.len(), 1);
    }
}
