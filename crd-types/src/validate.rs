//! Pure validation: the same checks as the CRD schemas and CEL rules, for objects that were
//! stored before a rule existed and for callers outside the API server.

use std::fmt;

/// One invalid field: its path (`spec.retain`) and what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every invalid field of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.field.as_str())
    }
}

/// Collects field errors while an object is checked.
#[derive(Debug, Default)]
pub struct Checker(Vec<FieldError>);

impl Checker {
    /// Record `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.0.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        }
    }

    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

/// Validation of an object on creation, and of a change from `old` (immutable fields).
pub trait Validate {
    /// Record every problem of the object as it is.
    fn check(&self, c: &mut Checker);

    /// Record every problem of the change from `old` (immutable fields and the like).
    fn check_update(&self, old: &Self, c: &mut Checker) {
        let _ = (old, c);
    }

    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        self.check(&mut c);
        c.finish()
    }

    fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        self.check(&mut c);
        self.check_update(old, &mut c);
        c.finish()
    }
}
