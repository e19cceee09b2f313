//! Fuzzes the pgoutput decoder: any bytes give a message or a typed error, never a panic.
//! Run with `cargo fuzz run parse` from `crates/clustera-pgoutput` (needs nightly).
#![no_main]

use clustera_pgoutput::{format_lsn, parse, PgOutput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(PgOutput::Commit { end_lsn, .. }) = parse(data) {
        let _ = format_lsn(end_lsn);
    }
});
