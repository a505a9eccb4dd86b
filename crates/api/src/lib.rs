//! Management API (placeholder while the crate is set up).
