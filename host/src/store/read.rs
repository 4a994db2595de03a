//! Buffered positional reads for the recovery scans, so walking a million
//! small records is a few large reads, not millions of small ones.
//! Reads only; never decides what the bytes mean.

use super::backend::BackendFile;

/// Reads any range of a file of known length through a window that is
/// refilled from the requested offset when a read falls outside it.
pub struct Reader<'a> {
    pub file: &'a dyn BackendFile,
    len: u64,
    buffer: Vec<u8>,
    /// File offset of `buffer[0]`.
    start: u64,
}

impl<'a> Reader<'a> {
    /// Size of one refill; reads this large or larger bypass the buffer.
    const WINDOW_BYTES: usize = 1 << 20;
    /// A read starting further than this past the window is not buffered.
    const SKIP_BYTES_MAX: u64 = 64 << 10;

    /// A reader of `file`, whose first `len` bytes are read.
    pub fn new(file: &'a dyn BackendFile, len: u64) -> Reader<'a> {
        Reader {
            file,
            len,
            buffer: Vec::new(),
            start: 0,
        }
    }

    /// Fills `out` from file offset `at`; the caller checked that
    /// `at + out.len() <= len`.
    pub fn read_exact_at(&mut self, out: &mut [u8], at: u64) -> std::io::Result<()> {
        let end = at + out.len() as u64;
        assert!(end <= self.len, "reads stay within the scanned length");
        let buffered_end = self.start + self.buffer.len() as u64;
        if at >= self.start && end <= buffered_end {
            let from = (at - self.start) as usize;
            out.copy_from_slice(&self.buffer[from..from + out.len()]);
            return Ok(());
        }
        // A large read, or one far past the window (a header after a big
        // payload the caller skips), goes straight to the file: refilling
        // would read bytes the caller never wants.
        if out.len() >= Self::WINDOW_BYTES || at > buffered_end + Self::SKIP_BYTES_MAX {
            return self.file.read_exact_at(out, at);
        }
        // At least out.len(): the caller checked the range is in the file.
        let window = (self.len - at).min(Self::WINDOW_BYTES as u64) as usize;
        self.buffer.resize(window, 0);
        if let Err(e) = self.file.read_exact_at(&mut self.buffer, at) {
            self.buffer.clear();
            return Err(e);
        }
        self.start = at;
        out.copy_from_slice(&self.buffer[..out.len()]);
        Ok(())
    }
}
