//! The processor's message decoding path: arbitrary bytes from the access topic go through
//! `wire::check` (what decides between storing and quarantining) and, when accepted, the
//! record reader the sink uses. Neither may panic, allocate from a header's claims, or
//! disagree: a checked message reads back exactly its counted records. Both wire versions
//! are covered (seeds: `corpus/wire_message/`, `v2-golden` is the v2 golden message): every
//! record carries its message's server, and a version-1 message has no server and no
//! upstream status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitelog_schema::wire::{check, BatchReader, MIN_VERSION, VERSION};

fuzz_target!(|message: &[u8]| {
    match check(message) {
        Ok(n) => {
            let reader = BatchReader::new(message).expect("a checked message has a header");
            let header = reader.header().clone();
            assert!((MIN_VERSION..=VERSION).contains(&header.version));
            let records: Vec<_> = reader.collect::<Result<_, _>>().expect("a checked message reads back");
            assert_eq!(records.len(), n as usize);
            for r in &records {
                assert_eq!(r.server, header.server);
                if header.version == 1 {
                    assert_eq!((r.server.as_ref(), r.upstream_status), ("", 0));
                }
            }
        }
        Err(e) => {
            let _ = (e.kind(), e.to_string());
        }
    }
});
