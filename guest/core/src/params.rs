//! Chunking parameters and their validation.
//!
//! Owns the limits of the WIT `chunking` and `cdc-params` types. Everything a
//! caller passes is checked here, once, into a [`ParamsError`]; the chunkers
//! then rely on validated values (FastCDC `debug_assert`s its own ranges).

use std::fmt;

use fastcdc::v2020 as cdc;

/// Smallest chunk length any chunking may ask for (fixed size or CDC min).
pub const CHUNK_LEN_BYTES_MIN: u32 = 64;
/// Largest chunk length any chunking may produce; equals the host's
/// `chunk-bytes-max` (16 MiB).
pub const CHUNK_LEN_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Largest CDC `min` the fastcdc crate supports (1 MiB).
pub const CDC_MIN_BYTES_MAX: u32 = 1024 * 1024;
/// Smallest CDC `avg` the fastcdc crate supports.
pub const CDC_AVG_BYTES_MIN: u32 = 256;
/// Largest CDC `avg` the fastcdc crate supports (4 MiB).
pub const CDC_AVG_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Smallest CDC `max` the fastcdc crate supports.
pub const CDC_MAX_BYTES_MIN: u32 = 1024;

// Our limits must sit inside what fastcdc accepts, or its debug assertions
// (and its cut-point math) would see values it was never meant for.
const _: () = {
    assert!(CHUNK_LEN_BYTES_MIN as usize >= cdc::MINIMUM_MIN);
    assert!(CDC_MIN_BYTES_MAX as usize <= cdc::MINIMUM_MAX);
    assert!(CDC_AVG_BYTES_MIN as usize >= cdc::AVERAGE_MIN);
    assert!(CDC_AVG_BYTES_MAX as usize <= cdc::AVERAGE_MAX);
    assert!(CDC_MAX_BYTES_MIN as usize >= cdc::MAXIMUM_MIN);
    assert!(CHUNK_LEN_BYTES_MAX as usize <= cdc::MAXIMUM_MAX);
    assert!(CHUNK_LEN_BYTES_MIN <= CDC_AVG_BYTES_MIN);
};

/// Parameters of content-defined chunking (FastCDC 2020), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CdcParams {
    pub min_bytes: u32,
    pub avg_bytes: u32,
    pub max_bytes: u32,
}

impl CdcParams {
    /// The default: min 16 KiB, avg 64 KiB, max 256 KiB.
    pub const DEFAULT: CdcParams = CdcParams {
        min_bytes: 16 * 1024,
        avg_bytes: 64 * 1024,
        max_bytes: 256 * 1024,
    };

    /// Checks the limits: `64 <= min <= 1 MiB`, `256 <= avg <= 4 MiB`,
    /// `1 KiB <= max <= 16 MiB`, `min <= avg <= max`, all three even.
    ///
    /// The ranges and the evenness are fastcdc 5's own requirements (its scan
    /// tests candidates in pairs, so an odd `min` would yield a chunk one byte
    /// short of it).
    pub fn validate(&self) -> Result<(), ParamsError> {
        let CdcParams {
            min_bytes,
            avg_bytes,
            max_bytes,
        } = *self;
        let ranges = [
            ("min", min_bytes, CHUNK_LEN_BYTES_MIN, CDC_MIN_BYTES_MAX),
            ("avg", avg_bytes, CDC_AVG_BYTES_MIN, CDC_AVG_BYTES_MAX),
            ("max", max_bytes, CDC_MAX_BYTES_MIN, CHUNK_LEN_BYTES_MAX),
        ];
        for (name, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(ParamsError::OutOfRange {
                    name,
                    value,
                    low,
                    high,
                });
            }
            if value % 2 != 0 {
                return Err(ParamsError::Odd { name, value });
            }
        }
        if !(min_bytes <= avg_bytes && avg_bytes <= max_bytes) {
            return Err(ParamsError::Unordered(*self));
        }
        Ok(())
    }
}

impl Default for CdcParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How a blob is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// Chunks of exactly this many bytes (64 B ..= 16 MiB); the last may be shorter.
    Fixed(u32),
    /// FastCDC 2020 with these parameters.
    ContentDefined(CdcParams),
}

impl Chunking {
    /// Checks the parameters against the limits documented on each variant.
    pub fn validate(&self) -> Result<(), ParamsError> {
        match *self {
            Chunking::Fixed(len_bytes) => {
                if (CHUNK_LEN_BYTES_MIN..=CHUNK_LEN_BYTES_MAX).contains(&len_bytes) {
                    Ok(())
                } else {
                    Err(ParamsError::OutOfRange {
                        name: "fixed",
                        value: len_bytes,
                        low: CHUNK_LEN_BYTES_MIN,
                        high: CHUNK_LEN_BYTES_MAX,
                    })
                }
            }
            Chunking::ContentDefined(params) => params.validate(),
        }
    }

    /// The longest chunk this chunking can produce.
    pub fn chunk_len_bytes_max(&self) -> u32 {
        match *self {
            Chunking::Fixed(len_bytes) => len_bytes,
            Chunking::ContentDefined(params) => params.max_bytes,
        }
    }
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking::ContentDefined(CdcParams::DEFAULT)
    }
}

/// Chunking parameters outside their limits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamsError {
    /// A parameter outside `low..=high`.
    OutOfRange {
        name: &'static str,
        value: u32,
        low: u32,
        high: u32,
    },
    /// A CDC parameter that is odd (fastcdc needs even sizes).
    Odd { name: &'static str, value: u32 },
    /// CDC parameters not in the order `min <= avg <= max`.
    Unordered(CdcParams),
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::OutOfRange {
                name,
                value,
                low,
                high,
            } => write!(
                f,
                "chunking parameter {name} = {value} is outside {low}..={high} bytes"
            ),
            ParamsError::Odd { name, value } => {
                write!(f, "chunking parameter {name} = {value} must be even")
            }
            ParamsError::Unordered(p) => write!(
                f,
                "chunking parameters must satisfy min <= avg <= max, got min {} avg {} max {}",
                p.min_bytes, p.avg_bytes, p.max_bytes
            ),
        }
    }
}

impl std::error::Error for ParamsError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdc(min_bytes: u32, avg_bytes: u32, max_bytes: u32) -> Chunking {
        Chunking::ContentDefined(CdcParams {
            min_bytes,
            avg_bytes,
            max_bytes,
        })
    }

    #[test]
    fn accepts_defaults_and_extremes() {
        assert_eq!(Chunking::default().validate(), Ok(()));
        assert_eq!(cdc(64, 256, 1024).validate(), Ok(()));
        assert_eq!(cdc(1 << 20, 4 << 20, 16 << 20).validate(), Ok(()));
        assert_eq!(Chunking::Fixed(64).validate(), Ok(()));
        assert_eq!(Chunking::Fixed(16 << 20).validate(), Ok(()));
        assert_eq!(
            Chunking::Fixed(65).validate(),
            Ok(()),
            "fixed sizes may be odd"
        );
    }

    #[test]
    fn rejects_each_limit() {
        let bad = [
            Chunking::Fixed(0),
            Chunking::Fixed(63),
            Chunking::Fixed((16 << 20) + 1),
            Chunking::Fixed(u32::MAX),
            cdc(62, 256, 1024),
            cdc(0, 0, 0),
            cdc((1 << 20) + 2, 4 << 20, 16 << 20),
            cdc(64, 254, 1024),
            cdc(64, (4 << 20) + 2, 16 << 20),
            cdc(64, 256, 1022),
            cdc(64, 256, (16 << 20) + 2),
            cdc(65, 256, 1024),
            cdc(64, 257, 1024),
            cdc(64, 256, 1025),
            cdc(4096, 2048, 8192),
            cdc(64, 8192, 4096),
            cdc(u32::MAX, u32::MAX, u32::MAX),
        ];
        for chunking in bad {
            let error = chunking.validate().expect_err("must be rejected");
            assert!(!error.to_string().is_empty(), "{chunking:?}");
        }
    }
}
