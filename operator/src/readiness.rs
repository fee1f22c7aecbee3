//! What the process still waits for before it is ready (`/readyz` lists it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Shared set of things the process waits for, each with a reason a human can act on.
#[derive(Clone, Default)]
pub struct Readiness {
    waiting: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Readiness {
    /// Record that the process waits for `what`, and why.
    pub fn wait_for(&self, what: &str, why: impl Into<String>) {
        self.lock().insert(what.to_owned(), why.into());
    }

    /// `what` no longer holds the process back.
    pub fn done(&self, what: &str) {
        self.lock().remove(what);
    }

    /// Everything still waited for, as `what: why`.
    pub fn waiting(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
