//! The processor's message decoding path: arbitrary bytes from the access topic go through
//! `wire::check` (what decides between storing and quarantining) and, when accepted, the
//! record reader the sink uses. Neither may panic, allocate from a header's claims, or
//! disagree: a checked message reads back exactly its counted records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitelog_schema::wire::{check, BatchReader};

fuzz_target!(|message: &[u8]| {
    match check(message) {
        Ok(n) => {
            let reader = BatchReader::new(message).expect("a checked message has a header");
            let records: Vec<_> = reader.collect::<Result<_, _>>().expect("a checked message reads back");
            assert_eq!(records.len(), n as usize);
        }
        Err(e) => {
            let _ = (e.kind(), e.to_string());
        }
    }
});
