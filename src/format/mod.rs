//! The `.kdz` file: a versioned, checksummed, bit-packed container for a [`Compressed`] table.
//!
//! The layout is specified in `docs/kdz-format.md`; [`spec`] holds its constants. [`write`]
//! produces a file atomically, [`Kdz::open`] memory-maps and validates one and decodes words
//! with the pure-Rust [`crate::composer::Composer`], so reading needs no LibTorch.
//!
//! ```no_run
//! # fn main() -> Result<(), kdcompress::format::FormatError> {
//! let kdz = kdcompress::format::Kdz::open("vectors.kdz")?;
//! if let Some(v) = kdz.embedding("king") {
//!     println!("{} dimensions, first {}", v.len(), v[0]);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Compressed`]: crate::compressed::Compressed
// Memory-mapping is the one place that needs `unsafe`; keep every other line of the reader safe.
#![deny(unsafe_code)]

mod error;
mod header;
mod reader;
mod sections;
pub mod spec;
mod writer;

pub use error::FormatError;
pub use header::SectionEntry;
pub use reader::Kdz;
pub use sections::Model;
pub use spec::{Codec, SectionKind, TensorDtype};
pub use writer::{file_len_as, to_bytes, to_bytes_as, write, write_as, write_new, write_new_as};
