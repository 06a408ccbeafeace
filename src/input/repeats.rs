//! Finding repeated words on all cores.
//!
//! A single hash set over 400,000 words is a sequential pass that costs as much as a tenth of
//! the whole read. Instead every word is hashed in parallel, the `(hash, row)` pairs are sorted
//! in parallel, and only words whose hashes collide are compared. Collisions between different
//! words are rare, and harmless: they are settled by comparing the words themselves, with a hash
//! set for the unlikely large group, so hostile input cannot make this quadratic.

use std::collections::HashMap;

use rayon::prelude::*;

/// A group of equal hashes larger than this is settled with a hash set, not pairwise.
const PAIRWISE_LIMIT: usize = 16;

/// Every row that repeats an earlier word, as `(row, first row of that word)`, by row.
pub(super) fn repeated_rows(words: &[String]) -> Vec<(usize, usize)> {
    let mut keyed: Vec<(u64, usize)> = words
        .par_iter()
        .enumerate()
        .map(|(row, w)| (hash(w.as_bytes()), row))
        .collect();
    // By hash alone: cheaper than by (hash, row), and the rare groups get their rows sorted below.
    keyed.par_sort_unstable_by_key(|&(h, _)| h);
    let mut repeats = Vec::new();
    for group in keyed.chunk_by_mut(|a, b| a.0 == b.0) {
        if group.len() == 1 {
            continue;
        }
        group.sort_unstable_by_key(|&(_, row)| row);
        let group = &*group;
        if group.len() <= PAIRWISE_LIMIT {
            for (k, &(_, row)) in group.iter().enumerate().skip(1) {
                if let Some(&(_, first)) = group[..k].iter().find(|(_, r)| words[*r] == words[row])
                {
                    repeats.push((row, first));
                }
            }
        } else {
            let mut first_rows: HashMap<&str, usize> = HashMap::with_capacity(group.len());
            for &(_, row) in group {
                let first = *first_rows.entry(words[row].as_str()).or_insert(row);
                if first != row {
                    repeats.push((row, first));
                }
            }
        }
    }
    repeats.sort_unstable();
    repeats
}

/// A fast 64-bit hash of a word; its quality only decides how often words get compared.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(23) ^ v).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(23) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // Final avalanche (MurmurHash3's fmix64), so every input bit reaches the sort order.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn finds_every_repeat_with_its_first_row() {
        let w = words(&["a", "b", "a", "c", "b", "a"]);
        assert_eq!(repeated_rows(&w), vec![(2, 0), (4, 1), (5, 0)]);
        assert!(repeated_rows(&words(&["x", "y"])).is_empty());
    }

    proptest! {
        #[test]
        fn agrees_with_a_hash_set(ws in proptest::collection::vec("[ab]{0,3}", 0..60)) {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let mut want = Vec::new();
            for (row, w) in ws.iter().enumerate() {
                let first = *seen.entry(w.as_str()).or_insert(row);
                if first != row { want.push((row, first)); }
            }
            prop_assert_eq!(repeated_rows(&ws), want);
        }
    }
}
