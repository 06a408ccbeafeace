//! Bytes whose checksums are recomputed before reading, so that mutations get past the CRC gate
//! and reach the parsers of the header fields, the table layout and every section.
#![no_main]

use kdcompress::format::Kdz;
use libfuzzer_sys::fuzz_target;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Rewrites every checksum the layout lets us find (section, table, header) to match.
fn repair(data: &mut [u8]) {
    if data.len() < 64 {
        return;
    }
    let count = (u32_at(data, 12) as usize).min(256);
    let table_end = 64 + 48 * count;
    if table_end > data.len() {
        return;
    }
    for i in 0..count {
        let e = 64 + 48 * i;
        let (offset, len) = (u64_at(data, e + 16), u64_at(data, e + 24));
        if let Some(end) = offset.checked_add(len).filter(|&end| end <= data.len() as u64) {
            let crc = crc32fast::hash(&data[offset as usize..end as usize]);
            data[e + 12..e + 16].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&data[64..table_end]);
    data[24..28].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32fast::hash(&data[..60]);
    data[60..64].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    repair(&mut bytes);
    if let Ok(kdz) = Kdz::from_bytes("fuzz.kdz", bytes) {
        let all = kdz.decode_all();
        assert_eq!(all.len(), kdz.len() * kdz.dim());
        for row in 0..kdz.len().min(16) {
            let word = kdz.vocab().word(row).unwrap_or_default().to_owned();
            assert_eq!(kdz.code(&word), kdz.code_of(row));
            let _ = kdz.embedding(&word);
        }
        let _ = kdz.to_compressed();
    }
});
