//! Fuzzes every decoder: they must return a value or a typed error, never panic.
//! Run with `cargo fuzz run decode` from `crates/clustera-debezium` (needs nightly).
#![no_main]

use clustera_debezium::{decode, decode_routed, Decoded, OutboxColumns, OutboxEvent, RoutedHeaders};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Change(change)) = decode(Some(data)) {
        let _ = OutboxEvent::from_change(&change, &OutboxColumns::default());
    }
    let (head, tail) = data.split_at(data.len() / 2);
    let headers: [(&str, &[u8]); 2] = [("id", head), ("eventType", tail)];
    let _ = decode_routed("outbox.event.User", Some(head), Some(tail), &headers, &RoutedHeaders::default());
});
