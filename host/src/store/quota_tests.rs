//! Quota tests.
