//! `kdcompress._native`: the `.kdz` reader of the `kdcompress` crate, for Python.
//!
//! The package `kdcompress` (python/kdcompress/) wraps [`Reader`] with numpy arrays and
//! gensim-style names; this module takes and returns plain Python objects, and hands float and
//! code arrays over as `bytearray`/`bytes` that numpy views without copying. The stable ABI
//! (abi3, Python 3.9+) has no buffer protocol, which is why arrays travel as bytes.
//!
//! Heavy work (opening, decoding, searching) runs with the GIL released. No Rust panic reaches
//! Python: each is caught and raised as `KdzError` naming the file.

use std::any::Any;
use std::error::Error;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kdcompress::codes::unpack_row;
use kdcompress::format::{FormatError, Kdz};
use kdcompress::inspect;
use kdcompress::neighbours::UnitRows;
use pyo3::exceptions::{PyIndexError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyType};
use rayon::prelude::*;

/// Rows decoded per parallel task: enough to amortise the scratch buffers.
const ROWS_PER_TASK: usize = 1024;

/// `kdcompress.KdzError(message, path)`, defined in Python so that it can carry attributes.
fn kdz_error(py: Python<'_>, path: &Path, message: String) -> PyErr {
    let class = py
        .import("kdcompress._errors")
        .and_then(|m| m.getattr("KdzError"))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, (message, path.display().to_string())),
        // Only when the package is broken; keep the message.
        Err(_) => PyValueError::new_err(message),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs `f`, turning a panic into a message; for code that runs with the GIL released.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

fn internal(py: Python<'_>, path: &Path, panic: String) -> PyErr {
    kdz_error(
        py,
        path,
        format!(
            "{}: internal error in kdcompress ({panic}); please report it",
            path.display()
        ),
    )
}

/// The whole error chain, as the CLI prints it (`{:#}`).
fn chain(e: &dyn Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A `bytearray` of `len` f32 values that `fill` writes with the GIL released, in place when
/// the allocation is 4-byte aligned (CPython's always is).
fn float_buffer<'py>(
    py: Python<'py>,
    path: &Path,
    len: usize,
    fill: impl FnOnce(&mut [f32]) + Send,
) -> PyResult<Bound<'py, PyByteArray>> {
    let bytes = len
        .checked_mul(4)
        .ok_or_else(|| kdz_error(py, path, format!("{}: array too large", path.display())))?;
    PyByteArray::new_with(py, bytes, |buf| {
        let done = match bytemuck::try_cast_slice_mut::<u8, f32>(buf) {
            Ok(floats) => py.detach(|| guarded(|| fill(floats))),
            Err(_) => {
                let mut floats = vec![0f32; len];
                let done = py.detach(|| guarded(|| fill(&mut floats)));
                buf.copy_from_slice(bytemuck::cast_slice(&floats));
                done
            }
        };
        done.map_err(|p| internal(py, path, p))
    })
}

/// Opens and fully validates a `.kdz` (header, section table, every checksum, sizes, codes).
///
/// Raises `KdzError` for a file that is not a valid `.kdz` (truncated, corrupt, a newer format
/// version) and `OSError` (`FileNotFoundError`, ...) when the file cannot be read.
#[pyfunction]
fn open(py: Python<'_>, path: PathBuf) -> PyResult<Reader> {
    let opened = py
        .detach(|| guarded(|| Kdz::open(&path)))
        .map_err(|p| internal(py, &path, p))?;
    match opened {
        Ok(kdz) => Ok(Reader {
            kdz,
            unit: OnceLock::new(),
        }),
        // OSError(errno, strerror, filename) becomes FileNotFoundError, PermissionError, ...
        Err(FormatError::Io { action, source, .. }) => Err(PyOSError::new_err((
            source.raw_os_error().unwrap_or(0),
            format!("cannot {action}: {source}"),
            path.display().to_string(),
        ))),
        Err(e) => Err(kdz_error(py, &path, chain(&e))),
    }
}

/// An open `.kdz`. Lookups and decoding cannot fail on the file's content once it is open.
#[pyclass(frozen, module = "kdcompress._native")]
struct Reader {
    kdz: Kdz,
    /// Decoded vectors scaled to unit length, made on the first similarity query.
    unit: OnceLock<UnitRows>,
}

impl Reader {
    fn path(&self) -> &Path {
        self.kdz.path()
    }

    fn check_rows(&self, rows: &[usize]) -> PyResult<()> {
        match rows.iter().find(|&&r| r >= self.kdz.len()) {
            Some(r) => Err(PyIndexError::new_err(format!(
                "{}: row {r} is out of range for {} words",
                self.path().display(),
                self.kdz.len()
            ))),
            None => Ok(()),
        }
    }

    fn unit(&self) -> &UnitRows {
        self.unit
            .get_or_init(|| UnitRows::new(self.kdz.decode_all(), self.kdz.dim()))
    }

    /// Decodes `rows` (each checked) into `out`, `rows.len() * d` long, on all cores.
    fn decode_rows_into(&self, rows: &[usize], out: &mut [f32]) {
        let kdz = &self.kdz;
        let (d, dd) = (kdz.dim(), kdz.model().config.num_codebooks);
        let bits = kdz.model().bits_per_code();
        let composer = kdz.composer();
        out.par_chunks_mut(ROWS_PER_TASK * d)
            .zip(rows.par_chunks(ROWS_PER_TASK))
            .for_each(|(out, rows)| {
                let mut codes = vec![0u16; dd];
                let mut scratch = vec![0f32; composer.scratch_len()];
                for (o, &row) in out.chunks_exact_mut(d).zip(rows) {
                    let packed = kdz.packed_row(row).expect("rows are checked by the caller");
                    unpack_row(packed, bits, &mut codes);
                    composer.decode_with(&codes, o, &mut scratch);
                }
            });
    }
}

#[pymethods]
impl Reader {
    /// The file this was read from.
    #[getter]
    fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    fn __len__(&self) -> usize {
        self.kdz.len()
    }

    /// Width of a decoded vector (d).
    #[getter]
    fn dim(&self) -> usize {
        self.kdz.dim()
    }

    /// Format version of the file, `(major, minor)`.
    #[getter]
    fn version(&self) -> (u16, u16) {
        self.kdz.version()
    }

    /// Total bytes of the file.
    #[getter]
    fn file_len(&self) -> u64 {
        self.kdz.file_len()
    }

    /// Bits per packed code, `ceil(log2 K)`.
    #[getter]
    fn bits_per_code(&self) -> u32 {
        self.kdz.model().bits_per_code()
    }

    /// The composer configuration: kind, D, K, d', h, d.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.kdz.model().config;
        let dict = PyDict::new(py);
        dict.set_item("kind", c.kind.name())?;
        dict.set_item("num_codebooks", c.num_codebooks)?;
        dict.set_item("num_codes", c.num_codes)?;
        dict.set_item("code_dim", c.code_dim)?;
        dict.set_item("hidden", c.hidden)?;
        dict.set_item("out_dim", c.out_dim)?;
        Ok(dict)
    }

    /// The metadata section as JSON.
    fn metadata_json(&self, py: Python<'_>) -> PyResult<String> {
        serde_json::to_string(self.kdz.metadata())
            .map_err(|e| kdz_error(py, self.path(), format!("{}: {e}", self.path().display())))
    }

    /// The words in row order.
    fn words(&self) -> Vec<&str> {
        self.kdz.vocab().words().collect()
    }

    /// The row of `word`, or None.
    fn row(&self, word: &str) -> Option<usize> {
        self.kdz.vocab().row(word)
    }

    /// The word at `row`.
    fn word(&self, row: usize) -> PyResult<&str> {
        self.check_rows(&[row])?;
        Ok(self.kdz.vocab().word(row).unwrap_or_default())
    }

    /// For a word that is not in the file: the message the CLI gives, and the suggestions.
    fn unknown_word(&self, py: Python<'_>, word: &str) -> PyResult<(String, Vec<String>)> {
        let found = py
            .detach(|| guarded(|| inspect::lookup(self.kdz.vocab(), word, self.path())))
            .map_err(|p| internal(py, self.path(), p))?;
        Ok(match found {
            Err(e) => (e.to_string(), e.suggestions),
            Ok(_) => (
                format!("{}: {word:?} is in the vocabulary", self.path().display()),
                Vec::new(),
            ),
        })
    }

    /// Every word decoded, row-major `[N, d]` f32, on all cores.
    fn decode_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyByteArray>> {
        let len = self.kdz.len() * self.kdz.dim();
        float_buffer(py, self.path(), len, |out| {
            self.kdz
                .decode_into(out)
                .expect("the buffer has N * d floats");
        })
    }

    /// The words at `rows` decoded, `[len(rows), d]` f32.
    fn decode_rows<'py>(
        &self,
        py: Python<'py>,
        rows: Vec<usize>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        self.check_rows(&rows)?;
        let len = rows.len() * self.kdz.dim();
        float_buffer(py, self.path(), len, |out| {
            self.decode_rows_into(&rows, out)
        })
    }

    /// Every code unpacked, `[N, D]` u16 in native byte order.
    fn codes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let codes = py
            .detach(|| guarded(|| self.kdz.codes()))
            .map_err(|p| internal(py, self.path(), p))?;
        Ok(PyBytes::new(py, bytemuck::cast_slice(codes.as_slice())))
    }

    /// The other rows whose code equals that of `row`, ascending.
    fn same_code(&self, py: Python<'_>, row: usize) -> PyResult<Vec<usize>> {
        self.check_rows(&[row])?;
        let kdz = &self.kdz;
        py.detach(|| {
            guarded(|| {
                let own = kdz.packed_row(row).unwrap_or_default();
                // Padding bits are zero in a valid file, so equal rows mean equal codes.
                kdz.packed_codes()
                    .par_chunks(kdz.model().row_bytes())
                    .enumerate()
                    .filter(|&(r, packed)| r != row && packed == own)
                    .map(|(r, _)| r)
                    .collect()
            })
        })
        .map_err(|p| internal(py, self.path(), p))
    }

    /// The `topn` rows most similar by cosine of the decoded vectors to the sum of the unit
    /// vectors of `positive` minus those of `negative` (or to `vector`), leaving the query rows
    /// out; `(row, cosine)`, most similar first, ties to the lower row. One positive row and no
    /// negative ones give exactly the neighbours `kdcompress similar` lists.
    #[pyo3(signature = (positive, negative, topn, vector=None))]
    fn most_similar(
        &self,
        py: Python<'_>,
        positive: Vec<usize>,
        negative: Vec<usize>,
        topn: usize,
        vector: Option<Vec<f32>>,
    ) -> PyResult<Vec<(usize, f32)>> {
        self.check_rows(&positive)?;
        self.check_rows(&negative)?;
        let dim = self.kdz.dim();
        if let Some(v) = &vector
            && v.len() != dim
        {
            return Err(PyValueError::new_err(format!(
                "the query vector has {} values but {} decodes to {dim}",
                v.len(),
                self.path().display()
            )));
        }
        let found = py.detach(|| {
            guarded(|| {
                let unit = self.unit();
                let query = match (&vector, positive.as_slice(), negative.is_empty()) {
                    (Some(v), _, _) => v.clone(),
                    (None, [one], true) => unit.row(*one).to_vec(),
                    _ => {
                        let mut q = vec![0f32; dim];
                        for (rows, sign) in [(&positive, 1f32), (&negative, -1f32)] {
                            for &r in rows {
                                for (q, x) in q.iter_mut().zip(unit.row(r)) {
                                    *q += sign * x;
                                }
                            }
                        }
                        q
                    }
                };
                let exclude: Vec<usize> = positive.iter().chain(&negative).copied().collect();
                unit.nearest(&query, topn, None, &exclude)
                    .into_iter()
                    .map(|n| (n.row, n.cosine))
                    .collect()
            })
        });
        found.map_err(|p| internal(py, self.path(), p))
    }

    /// Codebooks and composer weights by name: `(shape, f32 bytes in native byte order)`.
    fn tensors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, t) in self.kdz.composer().tensors() {
            let bytes = PyBytes::new(py, bytemuck::cast_slice(&t.data));
            dict.set_item(name, (t.shape.clone(), bytes))?;
        }
        Ok(dict)
    }

    /// Per-word L2 norms of the source vectors (f32 bytes, native order), if the file has them.
    fn norms<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.kdz
            .norms()
            .map(|n| PyBytes::new(py, bytemuck::cast_slice(n)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Reader({:?}, {} words)",
            self.path().display().to_string(),
            self.kdz.len()
        )
    }
}

/// The `.kdz` reader behind `kdcompress.load`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_class::<Reader>()?;
    Ok(())
}
