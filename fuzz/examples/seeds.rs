//! Writes seed files for the fuzzers: small valid `.kdz` files of every composer kind, with and
//! without norms, at awkward K and D, and with f16 tensors.
//!
//! `cargo run --example seeds -- corpus/open`

#[path = "../../tests/format_support/mod.rs"]
mod format_support;

use format_support::{Shape, random};
use kdcompress::composer::ComposerKind;
use kdcompress::format::TensorDtype;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: seeds DIRECTORY")?;
    std::fs::create_dir_all(&dir)?;
    for (i, kind) in ComposerKind::ALL.into_iter().enumerate() {
        for (k, d) in [(5u32, 3usize), (2, 9), (3, 4), (256, 2)] {
            // Split needs d' = ceil(d_out / D) and D <= d_out: d_out = 2D - 1 gives d' = 2.
            let out_dim = if kind == ComposerKind::Split { 2 * d - 1 } else { 3 };
            let shape = Shape {
                kind,
                n: 3 + i,
                k,
                d_codebooks: d,
                code_dim: 2,
                hidden: 2,
                out_dim,
                norms: (k + i as u32) % 2 == 1,
            };
            let table = random(i as u64, shape);
            let bytes = kdcompress::format::to_bytes(&table)?;
            let name = format!("{dir}/{}-k{k}-d{d}.kdz", kind.name());
            std::fs::write(&name, bytes)?;
            if k == 5 {
                let bytes = kdcompress::format::to_bytes_as(&table, TensorDtype::F16)?;
                std::fs::write(format!("{dir}/{}-k{k}-d{d}-f16.kdz", kind.name()), bytes)?;
            }
        }
    }
    Ok(())
}
