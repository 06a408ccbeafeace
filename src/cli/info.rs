//! `kdcompress info FILE.kdz`: what a `.kdz` holds and what each part costs.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use kdcompress::composer::ComposerKind;
use kdcompress::format::{Kdz, SectionKind};
use kdcompress::report::size_against;

/// Options of `info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A .kdz file.
    pub file: PathBuf,
}

/// Prints the sections of `args.file`, their sizes and shares, bits per word, the compression
/// ratio against the source's f32 matrix, and the metadata.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let kdz = Kdz::open(&args.file)?;
    let mut out = io::stdout().lock();
    report(&kdz, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Thousands separators make byte counts readable at a glance.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(kdz: &Kdz, w: &mut impl Write) -> anyhow::Result<()> {
    let m = kdz.model();
    let c = &m.config;
    let file_len = kdz.file_len();
    let (major, minor) = kdz.version();
    let n = m.n;
    writeln!(w, "file          {}", kdz.path().display())?;
    writeln!(
        w,
        "format        .kdz {major}.{minor}, {} bytes",
        grouped(file_len)
    )?;
    writeln!(w, "words (N)     {}", grouped(n))?;
    writeln!(w, "dimension (d) {}", c.out_dim)?;
    let method = &kdz.metadata().method;
    // Files written before methods were recorded leave it empty.
    if !method.is_empty() {
        writeln!(w, "method        {method}")?;
    }
    writeln!(
        w,
        "codes         D = {} codebooks of K = {} codes, {} bits each, {} bytes per word",
        c.num_codebooks,
        c.num_codes,
        m.bits_per_code(),
        m.row_bytes()
    )?;
    // Only the sizes this kind has: a linear composer has no hidden layer.
    let sizes = match c.kind {
        ComposerKind::Linear => format!("code width d' = {}", c.code_dim),
        ComposerKind::Sum => format!("code vectors summed, d' = d = {}", c.code_dim),
        ComposerKind::Mlp | ComposerKind::Lstm => {
            format!("code width d' = {}, hidden = {}", c.code_dim, c.hidden)
        }
        ComposerKind::Concat | ComposerKind::Split => {
            format!("{} values per code vector", c.code_dim)
        }
        ComposerKind::Conditioned => format!(
            "code width d = {}, hidden = {} (shared by the {} steps)",
            c.code_dim, c.hidden, c.num_codebooks
        ),
    };
    writeln!(
        w,
        "composer      {}: {sizes}, {} parameters",
        c.kind.name(),
        grouped(kdz.composer().num_params() as u64)
    )?;
    writeln!(w, "tensors       {}", tensor_storage(kdz))?;
    writeln!(w)?;

    let share = |bytes: u64| 100.0 * bytes as f64 / file_len.max(1) as f64;
    writeln!(
        w,
        "{:<24} {:<6} {:>10} {:>12} {:>12} {:>7}",
        "section", "codec", "offset", "stored", "raw", "share"
    )?;
    let mut in_sections = 0;
    for s in kdz.sections() {
        in_sections += s.stored_len;
        let name = match s.kind {
            SectionKind::Unknown(k) => format!("(kind {k})"),
            k => k.to_string(),
        };
        writeln!(
            w,
            "{:<24} {:<6} {:>10} {:>12} {:>12} {:>6.1}%",
            name,
            s.codec.to_string(),
            grouped(s.offset),
            grouped(s.stored_len),
            grouped(s.raw_len),
            share(s.stored_len)
        )?;
    }
    let overhead = file_len - in_sections;
    writeln!(
        w,
        "{:<24} {:<6} {:>10} {:>12} {:>12} {:>6.1}%",
        "(header, table, padding)",
        "",
        "",
        grouped(overhead),
        "",
        share(overhead)
    )?;
    writeln!(w)?;

    let code_bits = u64::from(m.bits_per_code()) * c.num_codebooks as u64;
    let tensors_len: u64 = kdz
        .sections()
        .iter()
        .filter(|s| s.kind == SectionKind::Tensors)
        .map(|s| s.stored_len)
        .sum();
    if n > 0 {
        writeln!(
            w,
            "bits per word      {code_bits} in codes ({} with padding to whole bytes), {:.1} for the whole file ({:.1} of it in the tables and composer)",
            8 * m.row_bytes(),
            8.0 * file_len as f64 / n as f64,
            8.0 * tensors_len as f64 / n as f64
        )?;
    } else {
        writeln!(
            w,
            "bits per word      {code_bits} in codes; the file holds no words"
        )?;
    }
    let source = n.saturating_mul(c.out_dim as u64).saturating_mul(4);
    let codes_len = n.saturating_mul(m.row_bytes() as u64);
    if source > 0 {
        writeln!(
            w,
            "compression ratio  whole file {}; codes alone {}",
            size_against(
                file_len,
                source,
                &format!("the f32 matrix (N x d x 4 = {} bytes)", grouped(source))
            ),
            size_against(codes_len, source, "it"),
        )?;
    }
    writeln!(w)?;
    writeln!(w, "metadata")?;
    let json =
        serde_json::to_string_pretty(kdz.metadata()).context("cannot format the metadata")?;
    writeln!(w, "{json}")?;
    Ok(())
}

/// How the tensors are stored: `f16 (codebooks, composer.out.bias, composer.out.weight)` when
/// they share a dtype, else each tensor with its own.
fn tensor_storage(kdz: &Kdz) -> String {
    let dtypes = kdz.tensor_dtypes();
    let mut all = dtypes.values();
    let first = all.next();
    match first {
        Some(&d) if all.all(|&x| x == d) => {
            let names: Vec<&str> = dtypes.keys().map(String::as_str).collect();
            format!("{d} ({})", names.join(", "))
        }
        _ => dtypes
            .iter()
            .map(|(name, d)| format!("{name} {d}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
