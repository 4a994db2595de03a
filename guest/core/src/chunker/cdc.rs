//! Content-defined cut points: FastCDC 2020 from the `fastcdc` crate.
//!
//! Owns nothing but the call into fastcdc; it must never reimplement the
//! gear hash, so our boundaries are exactly the crate's.

use fastcdc::v2020::{self as fastcdc2020, Normalization};

use crate::CdcParams;

/// FastCDC with validated parameters and its masks computed once.
#[derive(Clone, Debug)]
pub(super) struct CdcCutter {
    min_bytes: usize,
    avg_bytes: usize,
    max_bytes: usize,
    mask_s: u64,
    mask_l: u64,
}

impl CdcCutter {
    /// `params` must have been validated.
    pub(super) fn new(params: CdcParams) -> Self {
        debug_assert_eq!(params.validate(), Ok(()));
        let avg_bytes = params.avg_bytes as usize;
        // Level 1 is what `FastCDC::new` uses; the one-shot reference in the
        // tests relies on the two agreeing.
        let (mask_s, mask_l) = fastcdc2020::select_masks(avg_bytes, Normalization::Level1);
        CdcCutter {
            min_bytes: params.min_bytes as usize,
            avg_bytes,
            max_bytes: params.max_bytes as usize,
            mask_s,
            mask_l,
        }
    }

    /// Length of the first chunk of `window`.
    ///
    /// fastcdc looks at no more than `max` bytes, so the answer for a window
    /// of exactly `max` bytes is final whatever follows it. A shorter window
    /// must be the end of the content.
    pub(super) fn cut(&self, window: &[u8]) -> usize {
        let (_hash, len) = fastcdc2020::cut(
            window,
            self.min_bytes,
            self.avg_bytes,
            self.max_bytes,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }
}
