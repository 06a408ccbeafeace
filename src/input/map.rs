//! Memory maps of file ranges, one window at a time.
//!
//! Mapping the whole file would be simplest, but every page touched through a map stays in the
//! process's resident set until it is unmapped: a 171 MB GloVe file would count on top of the
//! 80 MB matrix. Mapping a few megabytes at a time keeps the file's share of memory to what the
//! threads are parsing right now, while the page cache still serves every window without a copy.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};
use rayon::prelude::*;

/// Maps `len` bytes of `file` from `offset`, read-only, with the pages read in up front.
///
/// `len` must be at least 1 and `offset + len` within the file.
///
/// # Safety
///
/// This is the crate's only `unsafe`. A memory map is only sound while no one else changes the
/// file: truncating it under the map makes reads fault, and writes show through as bytes that
/// change while we look at them. Every reader of large files by memory map (including the
/// safetensors and finalfusion loaders) accepts that risk. We limit it: the map is read-only and
/// private, each lives only while one window is parsed, and everything we keep is copied out
/// into owned vectors, so a later change to the file cannot reach a returned value.
#[allow(unsafe_code)]
pub(super) fn map_range(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: see the `# Safety` section above; callers never hold a map beyond one window.
    unsafe {
        MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)
    }
}

/// Half-open byte ranges `[start, end)` of at most `size` bytes covering `start..end`.
pub(super) fn windows(start: u64, end: u64, size: u64) -> Vec<(u64, u64)> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let next = at.saturating_add(size).min(end);
        out.push((at, next));
        at = next;
    }
    out
}

/// Length of a range as `usize`, failing cleanly where a window cannot be addressed.
pub(super) fn range_len(start: u64, end: u64) -> io::Result<usize> {
    usize::try_from(end - start).map_err(|_| io::Error::other("window larger than address space"))
}

/// CRC-32 of the whole file, hashing windows in parallel and joining them in order.
pub(super) fn crc32_file(file: &File, len: u64, window: u64) -> io::Result<u32> {
    let parts = windows(0, len, window)
        .into_par_iter()
        .map(|(start, end)| {
            let map = map_range(file, start, range_len(start, end)?)?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&map);
            Ok(hasher)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut total = crc32fast::Hasher::new();
    for part in &parts {
        total.combine(part);
    }
    Ok(total.finalize())
}

/// A forward-only cursor over a file that keeps one window mapped.
pub(super) struct MappedCursor<'f> {
    file: &'f File,
    len: u64,
    window: usize,
    map: Option<Mmap>,
    map_start: u64,
    pos: u64,
}

impl<'f> MappedCursor<'f> {
    /// A cursor at `pos` in `file` of `len` bytes, mapping `window` bytes at a time.
    pub fn new(file: &'f File, len: u64, pos: u64, window: usize) -> Self {
        MappedCursor {
            file,
            len,
            window: window.max(1),
            map: None,
            map_start: pos,
            pos,
        }
    }

    /// Bytes from the cursor on: at least `want` of them unless the file ends first.
    pub fn fill(&mut self, want: usize) -> io::Result<&[u8]> {
        let map_end = self.map_start + self.map.as_ref().map_or(0, |m| m.len() as u64);
        let want_end = self.pos.saturating_add(want as u64).min(self.len);
        if self.map.is_none() || want_end > map_end || self.pos < self.map_start {
            self.map = None;
            let len = (want.max(self.window) as u64).min(self.len - self.pos);
            if len == 0 {
                return Ok(&[]);
            }
            self.map = Some(map_range(self.file, self.pos, range_len(0, len)?)?);
            self.map_start = self.pos;
        }
        let map = self.map.as_deref().unwrap_or(&[]);
        // `pos - map_start` is within the map: it was just mapped at `pos`, or `pos` only moved
        // forward inside it.
        Ok(map
            .get((self.pos - self.map_start) as usize..)
            .unwrap_or(&[]))
    }

    /// Moves past `n` bytes returned by [`MappedCursor::fill`].
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n as u64).min(self.len);
    }

    /// Offset of the cursor in the file.
    pub fn offset(&self) -> u64 {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn windows_cover_the_range_exactly() {
        assert_eq!(windows(3, 10, 4), vec![(3, 7), (7, 10)]);
        assert_eq!(windows(5, 5, 4), vec![]);
        assert_eq!(windows(0, 2, 0), vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn parallel_crc_matches_one_pass() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let want = crc32fast::hash(&data);
        for window in [1, 7, 4096, 100_000] {
            assert_eq!(crc32_file(&f, data.len() as u64, window).unwrap(), want);
        }
    }

    #[test]
    fn cursor_remaps_across_windows_at_unaligned_offsets() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..9000u32).map(|i| (i % 256) as u8).collect();
        f.write_all(&data).unwrap();
        let mut c = MappedCursor::new(&f, data.len() as u64, 5, 100);
        let mut seen = Vec::new();
        loop {
            let got = c.fill(33).unwrap();
            if got.is_empty() {
                break;
            }
            let n = got.len().min(33);
            seen.extend_from_slice(&got[..n]);
            c.consume(n);
        }
        assert_eq!(seen, &data[5..]);
        assert_eq!(c.offset(), data.len() as u64);
    }
}
