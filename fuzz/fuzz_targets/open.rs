//! Any bytes handed to the reader: it must refuse or accept them without panicking, and what it
//! accepts must decode without panicking.
#![no_main]

use kdcompress::format::Kdz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(kdz) = Kdz::from_bytes("fuzz.kdz", data.to_vec()) {
        exercise(&kdz);
    }
});

fn exercise(kdz: &Kdz) {
    let all = kdz.decode_all();
    assert_eq!(all.len(), kdz.len() * kdz.dim());
    for row in 0..kdz.len().min(16) {
        let word = kdz.vocab().word(row).unwrap_or_default().to_owned();
        assert_eq!(kdz.code(&word), kdz.code_of(row));
        let _ = kdz.embedding(&word);
    }
    let _ = kdz.to_compressed();
}
