//! Fuzzes the pgoutput and replication decoders: any bytes give a message or a typed error,
//! never a panic.
//! Run with `cargo fuzz run parse` from `crates/clustera-pgoutput` (needs nightly).
#![no_main]

use clustera_pgoutput::replication::{parse_copy_data, ReplicationMessage};
use clustera_pgoutput::{format_lsn, parse, PgOutput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(PgOutput::Commit { end_lsn, .. }) = parse(data) {
        let _ = format_lsn(end_lsn);
    }
    if let Ok(ReplicationMessage::XLogData { data, .. }) = parse_copy_data(data) {
        let _ = parse(data);
    }
});
