//! Fixed-size cut points.

/// Length of the first chunk of `window` when chunks are `len_bytes` long.
/// A window shorter than that must be the end of the content.
pub(super) fn cut(len_bytes: usize, window: &[u8]) -> usize {
    len_bytes.min(window.len())
}
