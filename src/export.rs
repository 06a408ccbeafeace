//! Writing a `.kdz` out for other tools: the decoded vectors as GloVe text, word2vec binary or
//! `.npy`, or the compressed model itself as safetensors (layout in `docs/kdz-format.md`).
//!
//! Every export is atomic: it goes to a temporary file beside the target that is renamed over
//! it only when complete, so a failed or interrupted export never leaves a half-written file,
//! and an existing file is replaced only when asked.
//!
//! ```no_run
//! use kdcompress::export::{export, ExportFormat, ExportOptions};
//! use kdcompress::format::Kdz;
//!
//! let kdz = Kdz::open("vectors.kdz")?;
//! let opts = ExportOptions { format: ExportFormat::Npy, overwrite: false };
//! export(&kdz, "vectors.npy".as_ref(), &opts)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use safetensors::{Dtype, View};

use crate::atomic_file::{Failure, write_atomically};
use crate::format::Kdz;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ExportFormat {
    /// Decoded vectors as GloVe text: `word v1 ... vd` per line.
    Glove,
    /// Decoded vectors as word2vec binary: a `N d` line, then `word<space>` and d
    /// little-endian f32 and a newline per word.
    Word2vec,
    /// Decoded vectors as a NumPy `.npy` array `[N, d]` of `<f4`, rows in vocabulary order.
    Npy,
    /// The compressed model: codes, codebooks and composer weights, vocabulary and composer
    /// configuration in the metadata.
    Safetensors,
}

impl ExportFormat {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Glove => "glove",
            ExportFormat::Word2vec => "word2vec",
            ExportFormat::Npy => "npy",
            ExportFormat::Safetensors => "safetensors",
        }
    }

    /// The format a file name asks for: `.txt` GloVe, `.bin` word2vec, `.npy`, `.safetensors`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" => Some(ExportFormat::Glove),
            "bin" => Some(ExportFormat::Word2vec),
            "npy" => Some(ExportFormat::Npy),
            "safetensors" => Some(ExportFormat::Safetensors),
            _ => None,
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// What to write.
    pub format: ExportFormat,
    /// Replace an existing file instead of refusing.
    pub overwrite: bool,
}

/// An export that could not be written. Every message starts with the target file.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The target exists and overwriting was not requested.
    #[error("{path}: the file already exists; refusing to overwrite it")]
    Exists {
        /// The target.
        path: PathBuf,
    },
    /// The operating system refused an operation.
    #[error("{path}: cannot {action}")]
    Io {
        /// The file acted on.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A word cannot be written in the chosen text-delimited format.
    #[error("{path}: cannot write word {row} ({word:?}) as {format}: {reason}")]
    Unrepresentable {
        /// The target.
        path: PathBuf,
        /// The format.
        format: ExportFormat,
        /// Row of the word.
        row: usize,
        /// The word.
        word: String,
        /// Why.
        reason: &'static str,
    },
    /// The safetensors serializer refused the tensors.
    #[error("{path}: cannot build the safetensors file")]
    Safetensors {
        /// The target.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: safetensors::SafeTensorError,
    },
}

/// Value of the `format` metadata key of a safetensors export.
pub const SAFETENSORS_FORMAT: &str = "kdcompress";
/// Value of the `format_version` metadata key; bumped when the export layout changes.
pub const SAFETENSORS_VERSION: &str = "1";
/// Name of the codes tensor in a safetensors export.
pub const CODES: &str = "codes";
/// Name of the optional per-word source norms tensor in a safetensors export.
pub const NORMS: &str = "norms";

/// Writes `kdz` to `path` as `opts.format`, atomically.
pub fn export(kdz: &Kdz, path: &Path, opts: &ExportOptions) -> Result<(), ExportError> {
    if !opts.overwrite && path.exists() {
        return Err(ExportError::Exists {
            path: path.to_owned(),
        });
    }
    match opts.format {
        ExportFormat::Glove | ExportFormat::Word2vec => check_words(kdz, path, opts.format)?,
        ExportFormat::Npy | ExportFormat::Safetensors => {}
    }
    let safetensors = match opts.format {
        ExportFormat::Safetensors => Some(safetensors_bytes(kdz, path)?),
        _ => None,
    };
    atomic_write(path, opts.overwrite, |w| match opts.format {
        ExportFormat::Glove => write_vectors(kdz, w, glove_rows),
        ExportFormat::Word2vec => {
            writeln!(w, "{} {}", kdz.len(), kdz.dim())?;
            write_vectors(kdz, w, word2vec_rows)
        }
        ExportFormat::Npy => {
            w.write_all(&npy_header(kdz.len(), kdz.dim()))?;
            write_vectors(kdz, w, npy_rows)
        }
        ExportFormat::Safetensors => w.write_all(safetensors.as_deref().unwrap_or_default()),
    })
}

/// Writes the vocabulary, one word per line in row order, atomically: the row labels of an
/// `.npy` export. Refuses words containing a line break, which would shift every later row.
pub fn write_words(kdz: &Kdz, path: &Path, overwrite: bool) -> Result<(), ExportError> {
    if !overwrite && path.exists() {
        return Err(ExportError::Exists {
            path: path.to_owned(),
        });
    }
    if let Some((row, word)) = kdz
        .vocab()
        .words()
        .enumerate()
        .find(|(_, w)| w.contains(['\n', '\r']))
    {
        return Err(ExportError::Unrepresentable {
            path: path.to_owned(),
            format: ExportFormat::Npy,
            row,
            word: word.to_string(),
            reason: "a word list has one word per line and this word contains a line break",
        });
    }
    atomic_write(path, overwrite, |w| {
        for word in kdz.vocab().words() {
            w.write_all(word.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Refuses words that the text-delimited formats cannot hold, before anything is written.
fn check_words(kdz: &Kdz, path: &Path, format: ExportFormat) -> Result<(), ExportError> {
    let bad = |row: usize, word: &str, reason| ExportError::Unrepresentable {
        path: path.to_owned(),
        format,
        row,
        word: word.to_string(),
        reason,
    };
    for (row, word) in kdz.vocab().words().enumerate() {
        if word.is_empty() {
            return Err(bad(row, word, "the word is empty"));
        }
        // Readers of both formats split on any whitespace.
        if word.chars().any(char::is_whitespace) {
            return Err(bad(
                row,
                word,
                "the word contains whitespace, which separates fields",
            ));
        }
    }
    Ok(())
}

/// Writes through a temporary file beside `path` that replaces `path` only once `fill`
/// succeeded and the data reached the disk; without `overwrite`, an existing `path` (even one
/// created meanwhile) is left alone.
pub fn atomic_write(
    path: &Path,
    overwrite: bool,
    fill: impl FnOnce(&mut BufWriter<&std::fs::File>) -> io::Result<()>,
) -> Result<(), ExportError> {
    write_atomically(path, overwrite, fill).map_err(|failure| match failure {
        Failure::Exists => ExportError::Exists {
            path: path.to_owned(),
        },
        Failure::Io { action, source } => ExportError::Io {
            path: path.to_owned(),
            action,
            source,
        },
        Failure::Fill(source) => ExportError::Io {
            path: path.to_owned(),
            action: "write",
            source,
        },
    })
}

/// Rows decoded and formatted per parallel task.
const ROWS_PER_TASK: usize = 1024;
/// Rows held in memory at once: enough tasks to keep every core busy.
const ROWS_PER_BLOCK: usize = 64 * ROWS_PER_TASK;

/// Decodes every word block by block, has `format` turn each task's rows into bytes on all
/// cores, and writes the bytes in row order.
fn write_vectors(
    kdz: &Kdz,
    w: &mut impl Write,
    format: fn(&[&str], &[f32], usize, &mut Vec<u8>),
) -> io::Result<()> {
    let codes = kdz.codes();
    let (dd, d) = (codes.d(), kdz.dim());
    let vocab = kdz.vocab();
    let composer = kdz.composer();
    let mut vectors = vec![0f32; ROWS_PER_BLOCK.min(kdz.len()) * d];
    for start in (0..kdz.len()).step_by(ROWS_PER_BLOCK) {
        let end = (start + ROWS_PER_BLOCK).min(kdz.len());
        let out = &mut vectors[..(end - start) * d];
        composer.decode_batch(&codes.as_slice()[start * dd..end * dd], out);
        let words: Vec<&str> = vocab.words_in(start..end).collect();
        let chunks: Vec<Vec<u8>> = out
            .par_chunks(ROWS_PER_TASK * d)
            .zip(words.par_chunks(ROWS_PER_TASK))
            .map(|(v, words)| {
                let mut buf = Vec::with_capacity(v.len() * 10);
                format(words, v, d, &mut buf);
                buf
            })
            .collect();
        for c in chunks {
            w.write_all(&c)?;
        }
    }
    Ok(())
}

fn glove_rows(words: &[&str], vectors: &[f32], d: usize, out: &mut Vec<u8>) {
    for (word, v) in words.iter().zip(vectors.chunks_exact(d)) {
        out.extend_from_slice(word.as_bytes());
        for x in v {
            // `Display` for f32 prints the shortest text that reads back to the same value.
            out.push(b' ');
            out.extend_from_slice(x.to_string().as_bytes());
        }
        out.push(b'\n');
    }
}

fn word2vec_rows(words: &[&str], vectors: &[f32], d: usize, out: &mut Vec<u8>) {
    for (word, v) in words.iter().zip(vectors.chunks_exact(d)) {
        out.extend_from_slice(word.as_bytes());
        out.push(b' ');
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.push(b'\n');
    }
}

fn npy_rows(_: &[&str], vectors: &[f32], _: usize, out: &mut Vec<u8>) {
    for x in vectors {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// An `.npy` version 1.0 header for a C-order `[n, d]` array of little-endian f32, padded so the
/// data starts on a 64-byte boundary as NumPy itself does.
fn npy_header(n: usize, d: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - 10;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // A dict of two small numbers is far below the 65535 bytes a version 1.0 header allows.
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// A tensor to serialize, already in little-endian bytes.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Float tensors are exported as F32 whatever dtype the `.kdz` stores them in (f16 values widen
/// exactly): one dtype for every consumer, and the one `KdEmbedding` trains in.
fn f32_raw(shape: Vec<usize>, data: &[f32]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        shape,
        bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The narrowest integer type PyTorch can index with that holds every code below `k`.
pub fn codes_dtype(k: usize) -> Dtype {
    if k <= 256 {
        Dtype::U8
    } else if k <= 32_768 {
        Dtype::I16
    } else {
        Dtype::I32
    }
}

/// The whole safetensors file in memory: the model is the small part of a table (codes of a
/// few bytes per word and the composer), so building it first keeps the writer simple.
fn safetensors_bytes(kdz: &Kdz, path: &Path) -> Result<Vec<u8>, ExportError> {
    let config = *kdz.composer().config();
    let codes = kdz.codes();
    let dtype = codes_dtype(config.num_codes);
    let bytes: Vec<u8> = match dtype {
        Dtype::U8 => codes.as_slice().iter().map(|&c| c as u8).collect(),
        Dtype::I16 => codes
            .as_slice()
            .iter()
            .flat_map(|&c| (c as i16).to_le_bytes())
            .collect(),
        _ => codes
            .as_slice()
            .iter()
            .flat_map(|&c| i32::from(c).to_le_bytes())
            .collect(),
    };
    let mut tensors: Vec<(String, Raw)> = vec![(
        CODES.to_string(),
        Raw {
            dtype,
            shape: vec![codes.len(), codes.d()],
            bytes,
        },
    )];
    for (name, t) in kdz.composer().tensors() {
        tensors.push((name.clone(), f32_raw(t.shape.clone(), &t.data)));
    }
    if let Some(norms) = kdz.norms() {
        tensors.push((NORMS.to_string(), f32_raw(vec![norms.len()], norms)));
    }
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| ExportError::Safetensors {
            path: path.to_owned(),
            source: safetensors::SafeTensorError::JsonError(e),
        })
    };
    let metadata = HashMap::from([
        ("format".to_string(), SAFETENSORS_FORMAT.to_string()),
        (
            "format_version".to_string(),
            SAFETENSORS_VERSION.to_string(),
        ),
        (
            "composer".to_string(),
            json(serde_json::to_string(&config))?,
        ),
        (
            "vocab".to_string(),
            json(serde_json::to_string(
                &kdz.vocab().words().collect::<Vec<_>>(),
            ))?,
        ),
        (
            "kdz_metadata".to_string(),
            json(serde_json::to_string(kdz.metadata()))?,
        ),
    ]);
    safetensors::serialize(tensors.iter().map(|(n, t)| (n, t)), Some(metadata))
        .map(sorted_header)
        .map_err(|source| ExportError::Safetensors {
            path: path.to_owned(),
            source,
        })
}

/// safetensors writes the metadata map in hash order, so two exports of one `.kdz` differed in
/// their header. This rewrites the header JSON with every key sorted (serde_json's map is
/// ordered), padded with spaces to a multiple of 8 bytes as safetensors pads it. Tensor offsets
/// count from the end of the header, so they stay valid. A header that does not parse (never
/// from `serialize`) is left as it is.
fn sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(Ok(header)) = bytes
        .get(8..8 + len)
        .map(serde_json::from_slice::<serde_json::Value>)
    else {
        return bytes;
    };
    let Ok(mut json) = serde_json::to_vec(&header) else {
        return bytes;
    };
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        let f = |p: &str| ExportFormat::from_path(Path::new(p));
        assert_eq!(f("a/b.txt"), Some(ExportFormat::Glove));
        assert_eq!(f("b.BIN"), Some(ExportFormat::Word2vec));
        assert_eq!(f("b.npy"), Some(ExportFormat::Npy));
        assert_eq!(f("b.safetensors"), Some(ExportFormat::Safetensors));
        assert_eq!(f("b.vec"), None);
        assert_eq!(f("noext"), None);
    }

    /// The layout of the NPY format 1.0: magic, version, header length, a dict padded with
    /// spaces and ending in a newline, the data 64-aligned. (NumPy's own writer pads further,
    /// to leave room for growing the shape in place; readers accept both.)
    #[test]
    fn npy_header_matches_numpy() {
        let h = npy_header(3, 2);
        assert_eq!(h.len(), 128);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([h[8], h[9]]), 118);
        let dict = std::str::from_utf8(&h[10..]).unwrap();
        assert_eq!(
            dict.trim_end(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"
        );
        assert!(dict.ends_with(" \n"));
        let h = npy_header(usize::MAX, usize::MAX);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
        assert_eq!(h.last(), Some(&b'\n'));
    }

    #[test]
    fn codes_dtype_is_narrowest_signed_safe() {
        assert_eq!(codes_dtype(2), Dtype::U8);
        assert_eq!(codes_dtype(256), Dtype::U8);
        assert_eq!(codes_dtype(257), Dtype::I16);
        assert_eq!(codes_dtype(32_768), Dtype::I16);
        assert_eq!(codes_dtype(32_769), Dtype::I32);
        assert_eq!(codes_dtype(65_536), Dtype::I32);
    }

    #[test]
    fn text_rows_by_hand() {
        let words = ["a", "bc"];
        let v = [0.5f32, -1.0, 0.1, 3.0];
        let mut out = Vec::new();
        glove_rows(&words, &v, 2, &mut out);
        assert_eq!(out, b"a 0.5 -1\nbc 0.1 3\n");
        let mut out = Vec::new();
        word2vec_rows(&words[..1], &v[..2], 2, &mut out);
        assert_eq!(out, b"a \x00\x00\x00\x3f\x00\x00\x80\xbf\n");
    }
}
