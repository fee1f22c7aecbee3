//! Backup target URLs (`file://`, `nfs://`, `s3://`), their credentials, and the long-lived
//! object-store client each one is served by.
