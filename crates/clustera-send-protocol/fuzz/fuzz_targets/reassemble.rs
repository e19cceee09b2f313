//! Fuzzes decoding and reassembly: any sequence of messages (split on 0xFF) must give
//! progress or a typed error, never a panic or an unbounded allocation.
//! Run with `cargo fuzz run reassemble fuzz/seeds` from `crates/clustera-send-protocol`: the
//! seeds are whole jobs (head and chunks, in order, reversed, duplicated), which random bytes
//! would rarely find.
#![no_main]

use clustera_send_protocol::{Envelope, MemorySink, Reassembly};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reassembly = None;
    let mut sink = MemorySink::default();
    for piece in data.split(|b| *b == 0xff) {
        match Envelope::decode(piece) {
            Ok(Envelope::Request(head)) => {
                reassembly = Reassembly::new(head.body, 4096, 1 << 20).ok();
            }
            Ok(Envelope::Response(head)) => {
                reassembly = Reassembly::new(head.body, 4096, 1 << 20).ok();
            }
            Ok(Envelope::Chunk(chunk)) => {
                if let (Some(r), Ok(bytes)) = (reassembly.as_mut(), chunk.bytes()) {
                    let _ = r.accept(&chunk, &bytes, &mut sink);
                }
            }
            Ok(Envelope::Error(_)) | Err(_) => {}
        }
    }
});
