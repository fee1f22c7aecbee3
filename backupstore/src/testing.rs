//! Test support (feature `test-support`): real servers the tests of this and other crates run against.
