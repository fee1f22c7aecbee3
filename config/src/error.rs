use std::fmt;

/// A setting with an unusable value, named both ways the user could have set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The command-line flag without its dashes, e.g. `poll-interval`.
    pub flag: &'static str,
    /// The environment variable, e.g. `BULWARK_POLL_INTERVAL`.
    pub env: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} for --{} (env {}): {}",
            self.value, self.flag, self.env, self.reason
        )
    }
}
