//! Hot loops compiled for the CPU's wider vector instructions when it has them.
//!
//! The crate is built for baseline x86-64 (SSE2, four floats per instruction) so that one binary
//! runs everywhere. The few plain-Rust loops that dominate training (k-means assignment, the
//! local search's cost updates, the neighbour lists' scores) are written once as `#[inline(always)]` functions generic over
//! whether multiply-adds are fused, and called through [`wide!`], which on a CPU with AVX2 and
//! FMA (every x86-64 CPU since 2013-2015) calls them from a copy compiled for those (eight floats
//! per instruction, a multiply-add in one), on a CPU with AVX-512 from a copy compiled for that
//! (sixteen floats per instruction; the same arithmetic, so the same results as the AVX2 copy),
//! and otherwise calls them directly.

/// Whether the CPU runs AVX-512 (foundation; detected once, then cached by the standard library).
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU multiplies bf16 in hardware (AVX512-BF16 with AVX-512F: `vdpbf16ps`, and
/// LibTorch's bf16 matrix products through oneDNN, about 3.8 times the f32 rate here: 740
/// against 194 GFLOPS on 2 cores for a `[40000, 768] × [768, 256]` product). Elsewhere bf16
/// products are emulated, and slower. Only training (k-means) asks.
#[cfg(feature = "train")]
#[inline]
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU runs AVX2 and FMA (detected once, then cached by the standard library).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A multiply-add `a·b + c`: fused (one rounding) where `FUSED`, which kernels set only when
/// the CPU has FMA, else a multiply then an add.
#[inline(always)]
pub fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// `wide!(kernel(a: A, b: B, ...) -> R)`: calls the `#[inline(always)]` function
/// `kernel::<FUSED>` with the arguments `a, b, ...` (of the given types) from a copy compiled for
/// AVX-512 (or else AVX2) and FMA with `FUSED` true when the CPU has them, else directly with
/// `FUSED` false.
/// Fused multiply-adds round once where the plain path rounds twice, so the two paths may differ
/// in the last bits, as LibTorch's own kernels do from one CPU to another.
macro_rules! wide {
    ($kernel:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2($($arg: $ty),*) $(-> $ret)? {
            $kernel::<true>($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn avx512($($arg: $ty),*) $(-> $ret)? {
            $kernel::<true>($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        {
            if $crate::vector::has_avx512() {
                // SAFETY: the CPU was just found to support AVX-512F, AVX2 and FMA.
                #[allow(unsafe_code)]
                unsafe {
                    avx512($($arg),*)
                }
            } else if $crate::vector::has_avx2_fma() {
                // SAFETY: the CPU was just found to support AVX2 and FMA, all `avx2` requires.
                #[allow(unsafe_code)]
                unsafe {
                    avx2($($arg),*)
                }
            } else {
                $kernel::<false>($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $kernel::<false>($($arg),*)
        }
    }};
}
pub(crate) use wide;

/// Floats per block of [`madd_rows4`]: one AVX-512 register, two AVX2 ones.
pub const LANES: usize = 16;

/// Four rows against one block of [`LANES`] columns stored dimension by dimension
/// (`cols[j·LANES + l]`): lane l of row r's result is `start[l] + Σ_j x_r[j]·cols[j·LANES + l]`,
/// a multiply-add per dimension in order (fused where `FUSED`). The four rows share each load
/// of the block and run four independent chains; two left the multiply-adds waiting on one
/// another half the time. Dimensions run to the shorter of `cols` and the rows.
#[inline(always)]
pub fn madd_rows4<const FUSED: bool>(
    start: &[f32; LANES],
    (x0, x1, x2, x3): (&[f32], &[f32], &[f32], &[f32]),
    cols: &[f32],
) -> [[f32; LANES]; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = (*start, *start, *start, *start);
    for (j, col) in cols.chunks_exact(LANES).enumerate().take(x0.len()) {
        let col: &[f32; LANES] = col.try_into().expect("a block");
        let (v0, v1, v2, v3) = (x0[j], x1[j], x2[j], x3[j]);
        for l in 0..LANES {
            a0[l] = madd::<FUSED>(v0, col[l], a0[l]);
            a1[l] = madd::<FUSED>(v1, col[l], a1[l]);
            a2[l] = madd::<FUSED>(v2, col[l], a2[l]);
            a3[l] = madd::<FUSED>(v3, col[l], a3[l]);
        }
    }
    [a0, a1, a2, a3]
}
