//! Decimal to f32, exactly as `fast-float2` rounds, with a shortcut for the short decimals
//! that fill word-vector files.
//!
//! GloVe and word2vec text carry five to eight significant digits (`-0.00066023`, `4.0071`).
//! For such a number, both the digits as an integer `m <= 2^24` and the power `10^k`, `k <= 10`,
//! are exact in f32, so one IEEE division (or multiplication) rounds `m / 10^k` correctly: the
//! result is the correctly rounded value, the same as any correct parser's (Clinger's fast path).
//! Doing only that, without the generality of a full parser, is markedly cheaper per value;
//! everything else (long mantissas, exponents, `nan`, `inf`, malformed input) goes to
//! `fast-float2`.

/// Largest integer below which every integer is exact in f32.
const EXACT_MANTISSA: u64 = 1 << 24;

/// Powers of ten that are exact in f32 (5^10 < 2^24).
const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Parses the number that starts at `line[start]`; returns it and the index just past it.
#[inline]
pub(super) fn parse_f32_at(line: &[u8], start: usize) -> Option<(f32, usize)> {
    match short_decimal_at(line, start) {
        Some(parsed) => Some(parsed),
        None => fast_float2::parse_partial::<f32, _>(line.get(start..)?)
            .ok()
            .map(|(value, used)| (value, start + used)),
    }
}

/// `[-]digits[.digits]` with at most 2^24 as digits and at most 10 after the point, else
/// `None` (signs with `+`, exponents, `nan`, `inf` and long numbers are left to the full parser).
#[inline]
fn short_decimal_at(line: &[u8], start: usize) -> Option<(f32, usize)> {
    let n = line.len();
    let mut i = start;
    let negative = i < n && line[i] == b'-';
    i += usize::from(negative);
    let int_start = i;
    let mut mantissa: u64 = 0;
    while i < n {
        let d = line[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    let int_digits = i - int_start;
    // More integer digits than this cannot stay under 2^24 unless they are leading zeros,
    // which the full parser deals with; it also keeps the arithmetic below from wrapping.
    if int_digits > 8 {
        return None;
    }
    let mut fraction_digits = 0;
    if i < n && line[i] == b'.' {
        i += 1;
        if let Some(eight) = line.get(i..i + 8) {
            // Typical fractions have 4 to 8 digits: take them 8 bytes at a time, which saves
            // a mispredicted loop exit per value.
            let word = u64::from_le_bytes([
                eight[0], eight[1], eight[2], eight[3], eight[4], eight[5], eight[6], eight[7],
            ]);
            let (count, value) = leading_digits(word);
            if count == 8 && line.get(i + 8).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            mantissa = mantissa * POW10_INT[count] + value;
            fraction_digits = count;
            i += count;
        } else {
            let fraction_start = i;
            while i < n {
                let d = line[i].wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
                i += 1;
            }
            fraction_digits = i - fraction_start;
        }
    }
    let digits = int_digits + fraction_digits;
    // Up to 19 digits cannot wrap a u64, so the mantissa test is sound.
    if digits == 0 || digits > 19 || mantissa > EXACT_MANTISSA || fraction_digits >= POW10.len() {
        return None;
    }
    if i < n && (line[i] | 0x20) == b'e' {
        return None;
    }
    let magnitude = mantissa as f32 / POW10[fraction_digits];
    // Half the values are negative, in no pattern a branch predictor could learn: set the
    // sign bit without a branch (this also gives `-0` its sign).
    let value = f32::from_bits(magnitude.to_bits() | (u32::from(negative) << 31));
    Some((value, i))
}

const POW10_INT: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the 8 bytes of `word` (first byte lowest) are ASCII digits before the first
/// that is not, and the number they spell.
#[inline]
fn leading_digits(word: u64) -> (usize, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Borrows and carries only travel towards later bytes, so every byte up to and including
    // the first non-digit is classified correctly; later bytes do not matter.
    let digits = word.wrapping_sub(ONES * b'0' as u64);
    let not_digit = (digits.wrapping_add(ONES * 0x76) | digits) & HIGH;
    let count = (not_digit.trailing_zeros() / 8) as usize;
    if count == 0 {
        return (0, 0);
    }
    // Move the digits to the top bytes so that the bytes below read as leading zeros, then
    // combine pairs, quads and the two halves (the classic 8-digit SWAR conversion).
    let v = digits << (8 * (8 - count));
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    let v = ((v & mask).wrapping_mul(100 + (1_000_000 << 32)))
        .wrapping_add(((v >> 16) & mask).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    (count, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same_as_fast_float(text: &str) {
        let want = fast_float2::parse_partial::<f32, _>(text.as_bytes()).ok();
        let got = parse_f32_at(text.as_bytes(), 0);
        assert_eq!(
            got.map(|(v, n)| (v.to_bits(), n)),
            want.map(|(v, n)| (v.to_bits(), n)),
            "{text}"
        );
        // The same number inside a line, after a word and before more values, so that the
        // 8-byte paths see it too.
        let line = format!("w {text}");
        let padded = format!("w {text} 0.123456 1");
        let inner = parse_f32_at(padded.as_bytes(), 2);
        assert_eq!(
            inner.map(|(v, n)| (v.to_bits(), n - 2)),
            want.map(|(v, n)| (v.to_bits(), n)),
            "{text} (padded)"
        );
        let inner = parse_f32_at(line.as_bytes(), 2);
        assert_eq!(
            inner.map(|(v, n)| (v.to_bits(), n - 2)),
            want.map(|(v, n)| (v.to_bits(), n)),
            "{text}"
        );
    }

    #[test]
    fn typical_and_edge_values() {
        for text in [
            "0.418",
            "-0.00066023",
            "4.0071",
            "-0",
            "0",
            "1.",
            ".5",
            "-.5",
            "+3",
            "1e5",
            "1E-5",
            "2.5e+3",
            "16777216",
            "16777217",
            "123456789.5",
            "1e11",
            "1e-11",
            "0e99",
            "1e",
            "1e+",
            "-",
            ".",
            "e5",
            "nan",
            "-inf",
            "Infinity",
            "1.5abc",
            "7 8",
            "0.0000000000000000000001",
            "99999999999999999999",
        ] {
            same_as_fast_float(text);
        }
    }

    #[test]
    fn eight_byte_digit_runs() {
        assert_eq!(leading_digits(u64::from_le_bytes(*b"41242 0.")), (5, 41242));
        assert_eq!(leading_digits(u64::from_le_bytes(*b"00066023")), (8, 66023));
        assert_eq!(leading_digits(u64::from_le_bytes(*b" 1234567")), (0, 0));
        assert_eq!(
            leading_digits(u64::from_le_bytes(*b"9\xff\x00abcde")),
            (1, 9)
        );
        assert_eq!(
            leading_digits(u64::from_le_bytes(*b"1234567/")),
            (7, 1234567)
        );
        assert_eq!(
            leading_digits(u64::from_le_bytes(*b"123456:8")),
            (6, 123456)
        );
    }

    proptest! {
        #[test]
        fn agrees_with_fast_float_on_short_decimals(
            negative in any::<bool>(),
            int in 0u32..100_000,
            frac in proptest::option::of("[0-9]{0,9}"),
            exp in proptest::option::of(-14i32..14),
        ) {
            let mut text = String::new();
            if negative { text.push('-'); }
            text.push_str(&int.to_string());
            if let Some(f) = frac { text.push('.'); text.push_str(&f); }
            if let Some(e) = exp { text.push_str(&format!("e{e}")); }
            same_as_fast_float(&text);
        }

        #[test]
        fn agrees_with_fast_float_inside_lines(text in "[-0-9.eE+a ]{1,24}") {
            same_as_fast_float(&text);
        }

        #[test]
        fn agrees_with_fast_float_on_shortest_f32_repr(v in any::<f32>().prop_filter("finite", |v| v.is_finite())) {
            same_as_fast_float(&v.to_string());
            same_as_fast_float(&format!("{v:e}"));
        }
    }
}
