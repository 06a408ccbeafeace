//! Whether a table's codebooks and composer can be stored as f16 without a measurable loss.
//!
//! Below about 100k words the tables weigh more than the codes (K = 256, d = 768, D = 32: 25 MB
//! of f32 tables for 21.7k words), and f16 halves them. Storing f16 rounds every weight to 11
//! significant bits; [`choose`] measures what that does to the decoded vectors, decoding every
//! word with the rounded weights, and keeps f16 only when the error over all words grows by at
//! most [`MAX_F16_MSE_INCREASE`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use kdcompress::codes::Codes;
//! use kdcompress::composer::{Composer, ComposerConfig, ComposerKind, Tensor, CODEBOOKS};
//! use kdcompress::format::TensorDtype;
//! use kdcompress::precision::{Precision, choose};
//!
//! // Two words, D = 1, K = 2, d = 2, concat: word i decodes to code vector codes[i].
//! let config = ComposerConfig {
//!     kind: ComposerKind::Concat, num_codebooks: 1, num_codes: 2, code_dim: 2, hidden: 0, out_dim: 2,
//! };
//! let books = Tensor::new(vec![1, 2, 2], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
//! let composer = Composer::new(config, BTreeMap::from([(CODEBOOKS.to_string(), books)])).unwrap();
//! let codes = Codes::new(2, 1, vec![0, 1]).unwrap();
//! let original = [0.0, 0.0, 1.0, 1.0];
//! let choice = choose(Precision::Auto, &composer, &codes, &original).unwrap();
//! assert_eq!(choice.dtype, TensorDtype::F16);
//! assert!(choice.relative_increase().unwrap() < 1e-3);
//! ```

use rayon::prelude::*;

use crate::codes::Codes;
use crate::composer::{Composer, ComposerError};
use crate::format::TensorDtype;

/// Largest relative growth of the all-words MSE that `auto` accepts for f16: 0.1%.
///
/// The summary and the benchmarks print the MSE to three or four significant digits
/// (`mse 0.1039`, `3.497`), and a change of 0.1% is below the third: f16 is kept only where no
/// figure anyone compares could move by more than its own rounding. Rounding a weight to f16
/// moves it by at most 2⁻¹¹ of itself, independently of the residual the codes leave, so on
/// ordinary tables the cost is orders of magnitude below the bound (README, "The `.kdz`
/// format"); it is exceeded by tables whose weights leave f16's range (past ±65504, or so small
/// that they lose their digits) or whose composer amplifies the rounding, as in a sum of large
/// code vectors that nearly cancel.
pub const MAX_F16_MSE_INCREASE: f64 = 1e-3;

/// How the writer stores the codebooks and composer weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f16 when it costs at most [`MAX_F16_MSE_INCREASE`] of the MSE over all words, else f32.
    #[default]
    Auto,
    /// Always f32: the file is readable by every 1.x reader.
    F32,
    /// f16 (format 1.2) even when it costs fidelity; f32 if a weight lies beyond the f16 range,
    /// where storing f16 would turn it into an infinity.
    F16,
}

impl Precision {
    /// Name as the option spells it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// What [`choose`] decided and what it measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StorageChoice {
    /// What was asked for.
    pub precision: Precision,
    /// What the tensors will be stored as.
    pub dtype: TensorDtype,
    /// MSE over all words, decoding with the f32 weights.
    pub mse_f32: f64,
    /// MSE over all words, decoding with the weights rounded to f16; `None` when rounding
    /// overflows a weight (f16 cannot hold the table).
    pub mse_f16: Option<f64>,
}

impl StorageChoice {
    /// `mse_f16 / mse_f32 - 1`, when both are known, finite and the f32 error is not zero.
    pub fn relative_increase(&self) -> Option<f64> {
        let f16 = self.mse_f16?;
        (f16.is_finite() && self.mse_f32.is_finite() && self.mse_f32 > 0.0)
            .then(|| f16 / self.mse_f32 - 1.0)
    }

    /// Whether f16 passes `auto`'s test: every rounded weight finite, and the MSE finite and at
    /// most [`MAX_F16_MSE_INCREASE`] above f32's.
    pub fn f16_is_harmless(&self) -> bool {
        match self.mse_f16 {
            Some(f16) if f16.is_finite() && self.mse_f32.is_finite() => {
                f16 <= self.mse_f32 * (1.0 + MAX_F16_MSE_INCREASE)
            }
            _ => false,
        }
    }
}

/// Why [`choose`] could not measure.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    /// The original vectors do not match the codes and composer.
    #[error("{found} original values for {words} words of width {dim}")]
    Shape {
        /// Words in the codes.
        words: usize,
        /// Output width of the composer.
        dim: usize,
        /// Length of the original matrix.
        found: usize,
    },
    /// The codes do not fit the composer.
    #[error("codes with D = {codes_d} for a composer of D = {composer_d}")]
    Codes {
        /// D of the codes.
        codes_d: usize,
        /// D of the composer.
        composer_d: usize,
    },
    /// The rounded weights do not form a composer (cannot happen: same shapes).
    #[error("the weights rounded to f16 do not form a composer")]
    Composer(#[from] ComposerError),
}

/// `composer` with every weight rounded as `dtype` stores it: what a reader of such a file
/// decodes with. `None` if rounding turns a finite weight into an infinity.
pub fn rounded(composer: &Composer, dtype: TensorDtype) -> Result<Option<Composer>, ComposerError> {
    let mut tensors = composer.tensors().clone();
    for t in tensors.values_mut() {
        for v in &mut t.data {
            let r = dtype.round(*v);
            if v.is_finite() && !r.is_finite() {
                return Ok(None);
            }
            *v = r;
        }
    }
    Composer::new(*composer.config(), tensors).map(Some)
}

/// Decides how to store `composer`'s tensors under `precision`, measuring the MSE over all words
/// of `codes` against `original` (row-major `[N, d]`) with the f32 weights and with the weights
/// rounded to f16. Both are measured whatever is asked, so the caller can say what f16 costs.
pub fn choose(
    precision: Precision,
    composer: &Composer,
    codes: &Codes,
    original: &[f32],
) -> Result<StorageChoice, PrecisionError> {
    let (dd, dim) = (composer.config().num_codebooks, composer.config().out_dim);
    if codes.d() != dd {
        return Err(PrecisionError::Codes {
            codes_d: codes.d(),
            composer_d: dd,
        });
    }
    let words = codes.len();
    if words.checked_mul(dim) != Some(original.len()) {
        return Err(PrecisionError::Shape {
            words,
            dim,
            found: original.len(),
        });
    }
    let half = rounded(composer, TensorDtype::F16)?;
    let (sum32, sum16) = squared_errors(composer, half.as_ref(), codes, original);
    let mean = |sum: f64| if words == 0 { 0.0 } else { sum / words as f64 };
    let mut choice = StorageChoice {
        precision,
        dtype: TensorDtype::F32,
        mse_f32: mean(sum32),
        mse_f16: half.is_some().then(|| mean(sum16)),
    };
    choice.dtype = match precision {
        Precision::F32 => TensorDtype::F32,
        Precision::F16 if choice.mse_f16.is_some() => TensorDtype::F16,
        Precision::F16 => TensorDtype::F32,
        Precision::Auto if choice.f16_is_harmless() => TensorDtype::F16,
        Precision::Auto => TensorDtype::F32,
    };
    Ok(choice)
}

/// Summed squared L2 errors over all words, decoding with `full` and (if given) `half`, one pass
/// over the words on all cores and never a decoded matrix in memory.
fn squared_errors(
    full: &Composer,
    half: Option<&Composer>,
    codes: &Codes,
    original: &[f32],
) -> (f64, f64) {
    const ROWS: usize = 1024;
    let (dd, dim) = (full.config().num_codebooks, full.config().out_dim);
    codes
        .as_slice()
        .par_chunks(ROWS * dd)
        .zip(original.par_chunks(ROWS * dim))
        .map(|(codes, original)| {
            let mut out = vec![0f32; dim];
            let mut scratch = vec![0f32; full.scratch_len()];
            let mut sums = (0f64, 0f64);
            for (c, x) in codes.chunks_exact(dd).zip(original.chunks_exact(dim)) {
                full.decode_with(c, &mut out, &mut scratch);
                sums.0 += squared_distance(&out, x);
                if let Some(h) = half {
                    scratch.resize(h.scratch_len(), 0.0);
                    h.decode_with(c, &mut out, &mut scratch);
                    sums.1 += squared_distance(&out, x);
                }
            }
            sums
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::composer::{CODEBOOKS, ComposerConfig, ComposerKind, OUT_BIAS, OUT_WEIGHT, Tensor};

    /// A linear composer over D = 2, K = 4, d' = d = 3 with code vectors `books` and identity
    /// output, and the words' codes: every (c0, c1) pair once.
    fn linear(books: Vec<f32>) -> (Composer, Codes) {
        let config = ComposerConfig {
            kind: ComposerKind::Linear,
            num_codebooks: 2,
            num_codes: 4,
            code_dim: 3,
            hidden: 0,
            out_dim: 3,
        };
        let mut eye = vec![0f32; 9];
        for i in 0..3 {
            eye[i * 4] = 1.0;
        }
        let tensors = BTreeMap::from([
            (
                CODEBOOKS.to_string(),
                Tensor::new(vec![2, 4, 3], books).unwrap(),
            ),
            (
                OUT_WEIGHT.to_string(),
                Tensor::new(vec![3, 3], eye).unwrap(),
            ),
            (
                OUT_BIAS.to_string(),
                Tensor::new(vec![3], vec![0.0; 3]).unwrap(),
            ),
        ]);
        let codes = (0..16u16).flat_map(|w| [w / 4, w % 4]).collect();
        (
            Composer::new(config, tensors).unwrap(),
            Codes::new(4, 2, codes).unwrap(),
        )
    }

    fn decoded(c: &Composer, codes: &Codes) -> Vec<f32> {
        let mut out = vec![0f32; codes.len() * c.config().out_dim];
        c.decode_batch(codes.as_slice(), &mut out);
        out
    }

    /// Each decoded value moved by `offset`: an error the composer cannot explain.
    fn original(c: &Composer, codes: &Codes, offset: f32) -> Vec<f32> {
        decoded(c, codes).iter().map(|v| v + offset).collect()
    }

    /// Ordinary weights: rounding costs nothing measurable, and auto stores f16.
    #[test]
    fn auto_keeps_f16_when_rounding_is_harmless() {
        let books: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 0.8).collect();
        let (c, codes) = linear(books);
        let x = original(&c, &codes, 0.3);
        let choice = choose(Precision::Auto, &c, &codes, &x).unwrap();
        assert_eq!(choice.dtype, TensorDtype::F16);
        assert!(
            (choice.mse_f32 - 3.0 * 0.3f64.powi(2)).abs() < 1e-5,
            "{choice:?}"
        );
        let increase = choice.relative_increase().unwrap();
        assert!(increase.abs() < MAX_F16_MSE_INCREASE / 2.0, "{choice:?}");
        // What the test measured is what a reader of the f16 file decodes.
        let half = rounded(&c, TensorDtype::F16).unwrap().unwrap();
        let direct = crate::eval::mse(&x, &decoded(&half, &codes), 3).unwrap();
        assert!((direct - choice.mse_f16.unwrap()).abs() < 1e-12);
    }

    /// Large code vectors that nearly cancel: f16 keeps 11 bits of 1000 (steps of 0.5), so the
    /// sums lose the small differences the table is made of.
    #[test]
    fn auto_keeps_f32_when_rounding_costs_fidelity() {
        let books: Vec<f32> = (0..24)
            .map(|i| {
                let big = if i < 12 { 1000.0 } else { -1000.0 };
                big + (i as f32 * 0.37).sin() * 0.3
            })
            .collect();
        let (c, codes) = linear(books);
        let x = original(&c, &codes, 0.001);
        let choice = choose(Precision::Auto, &c, &codes, &x).unwrap();
        assert_eq!(choice.dtype, TensorDtype::F32, "{choice:?}");
        assert!(choice.relative_increase().unwrap() > 1.0, "{choice:?}");
        // Asked for, f16 is still what is stored, and the cost is reported.
        let forced = choose(Precision::F16, &c, &codes, &x).unwrap();
        assert_eq!(forced.dtype, TensorDtype::F16);
        assert_eq!(forced.mse_f16, choice.mse_f16);
    }

    /// A weight beyond ±65504 would become an infinity: f16 cannot hold the table at all.
    #[test]
    fn auto_keeps_f32_when_a_weight_overflows_f16() {
        let mut books: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        books[5] = 1.0e5;
        let (c, codes) = linear(books);
        let x = original(&c, &codes, 0.1);
        assert!(rounded(&c, TensorDtype::F16).unwrap().is_none());
        let choice = choose(Precision::Auto, &c, &codes, &x).unwrap();
        assert_eq!(choice.dtype, TensorDtype::F32);
        assert_eq!(choice.mse_f16, None);
        assert_eq!(choice.relative_increase(), None);
        assert!(!choice.f16_is_harmless());
        // Asked for, f16 would write infinities: the weights stay f32.
        let forced = choose(Precision::F16, &c, &codes, &x).unwrap();
        assert_eq!(forced.dtype, TensorDtype::F32);
    }

    /// An error that is already not finite is never called harmless.
    #[test]
    fn non_finite_errors_keep_f32() {
        let choice = |mse_f32: f64, mse_f16: f64| StorageChoice {
            precision: Precision::Auto,
            dtype: TensorDtype::F32,
            mse_f32,
            mse_f16: Some(mse_f16),
        };
        assert!(!choice(0.1, f64::NAN).f16_is_harmless());
        assert!(!choice(0.1, f64::INFINITY).f16_is_harmless());
        assert!(!choice(f64::NAN, 0.1).f16_is_harmless());
        assert!(choice(0.1, 0.1 * (1.0 + MAX_F16_MSE_INCREASE)).f16_is_harmless());
        assert!(!choice(0.1, 0.1 * (1.0 + 2.0 * MAX_F16_MSE_INCREASE)).f16_is_harmless());
        assert!(choice(0.0, 0.0).f16_is_harmless());
        assert!(!choice(0.0, 1e-9).f16_is_harmless());
    }

    #[test]
    fn asked_for_f32_is_f32_and_shapes_are_checked() {
        let (c, codes) = linear((0..24).map(|i| i as f32 * 0.01).collect());
        let x = original(&c, &codes, 0.0);
        let choice = choose(Precision::F32, &c, &codes, &x).unwrap();
        assert_eq!(choice.dtype, TensorDtype::F32);
        assert!(choice.mse_f16.is_some());
        assert!(matches!(
            choose(Precision::Auto, &c, &codes, &x[1..]),
            Err(PrecisionError::Shape {
                words: 16,
                dim: 3,
                found: 47
            })
        ));
        let other = Codes::new(4, 1, vec![0; 16]).unwrap();
        assert!(matches!(
            choose(Precision::Auto, &c, &other, &x),
            Err(PrecisionError::Codes { .. })
        ));
    }
}
