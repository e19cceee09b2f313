//! Every Clustera producer partitions keyed records as Java's Kafka producer does
//! (`toPositive(murmur2(key)) % partitions`), so a key lands on the partition where a Java
//! producer, Kafka Connect or Debezium would put it.
//!
//! The reference hash here is written for this test from the published algorithm (MurmurHash2,
//! 32 bits, Kafka's seed `0x9747b28c`) and checked first against the vectors of Kafka's own
//! `UtilsTest.testMurmur2`; only then is it used to predict where the real producer (built by
//! [`idempotent_producer_config`], talking to librdkafka's mock cluster) puts each key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clustera::infra::idempotent_producer_config;
use clustera::testing::{config_from_pairs, MockBroker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Kafka's `Utils.murmur2`: MurmurHash2 (32-bit), seed `0x9747b28c`, little-endian blocks.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // The length is mixed in as Java's `int`, which wraps the same way.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// Where Java's default partitioner puts a keyed record.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    to_positive(murmur2(key)) % partitions
}

#[test]
fn murmur2_matches_kafkas_published_vectors() {
    // Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
    let vectors: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (input, expected) in vectors {
        assert_eq!(
            murmur2(input),
            expected,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn to_positive_clears_only_the_sign_bit() {
    assert_eq!(to_positive(i32::MIN), 0);
    assert_eq!(to_positive(-1), i32::MAX);
    assert_eq!(to_positive(-973_932_308), 1_173_551_340);
    assert_eq!(to_positive(479_470_107), 479_470_107);
}

#[tokio::test]
async fn keyed_records_land_where_javas_partitioner_puts_them() {
    const PARTITIONS: i32 = 12;
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("placement", PARTITIONS).unwrap();
    let config = config_from_pairs(&[("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())]).unwrap();
    let producer: FutureProducer = idempotent_producer_config(&config, Duration::ZERO)
        .create()
        .unwrap();

    // Kafka's vectors, uuids like the outbox's aggregate ids, and short keys; together they
    // reach every partition, so a CRC32 or random placement could not pass by chance.
    let mut keys: Vec<String> = [
        "21",
        "foobar",
        "a-little-bit-long-string",
        "a-little-bit-longer-string",
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
        "abc",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    keys.extend((0..100).map(|i| format!("{i:08x}-2222-4333-8444-555555555555")));
    keys.extend((0..50).map(|i| format!("user-{i}")));

    let mut reached = std::collections::BTreeSet::new();
    for key in &keys {
        let partition = producer
            .send(
                FutureRecord::to("placement").key(key).payload("v"),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("{key}: {e}"))
            .partition;
        assert_eq!(
            partition,
            java_partition(key.as_bytes(), PARTITIONS),
            "key {key:?}"
        );
        reached.insert(partition);
    }
    assert_eq!(reached.len(), PARTITIONS as usize, "{reached:?}");
}
