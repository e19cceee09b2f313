//! `clustera lag` against `clustera dev`: partitions without a commit count from the oldest
//! record kept, and every topic the group reads comes in one listing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Dev, BIN};
use std::io::Write;
use std::process::{Command, Stdio};

impl Dev {
    /// `clustera ARGS --brokers ADDR` with `stdin`, which must succeed: its standard output.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--brokers", &self.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The table's rows, split into columns.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn uncommitted_partitions_count_from_the_oldest_record_kept() {
    let dev = Dev::start(&["orders:2", "audit:1"]);
    // The development broker keeps about 5 MB per partition: 7 MB in partition 1 makes it
    // drop its oldest records, so its low watermark is above 0.
    let big: String = (0..700)
        .map(|i| format!("{{\"value\":\"{}\"}}\n", format!("{i:05}").repeat(2000)))
        .collect();
    dev.ok(
        &[
            "produce",
            "--topic",
            "orders",
            "--format",
            "jsonl",
            "--partition",
            "1",
        ],
        big.as_bytes(),
    );
    dev.ok(
        &["produce", "--topic", "orders", "--partition", "0"],
        b"a\nb\nc\n",
    );
    dev.ok(&["produce", "--topic", "audit"], b"x\ny\n");
    let low: i64 = dev
        .ok(
            &[
                "consume",
                "--topic",
                "orders",
                "--partition",
                "1",
                "--offset",
                "beginning",
                "--count",
                "1",
                "--format",
                "%o",
            ],
            b"",
        )
        .parse()
        .unwrap();
    assert!(
        low > 0,
        "the broker dropped old records: low watermark {low}"
    );

    // The group commits partition 0 of orders (all of it) and one record of audit.
    let read = |args: &[&str]| {
        let mut all = vec!["consume", "--group", "g", "--exit-at-end"];
        all.extend(args);
        dev.ok(&all, b"")
    };
    assert_eq!(
        read(&[
            "--topic",
            "orders",
            "--partition",
            "0",
            "--offset",
            "beginning"
        ]),
        "\ta\n\tb\n\tc\n"
    );
    assert_eq!(
        read(&["--topic", "audit", "--offset", "beginning", "--count", "1"]),
        "\tx\n"
    );

    let orders = dev.ok(&["lag", "--group", "g", "--topic", "orders"], b"");
    let uncommitted = 700 - low;
    assert_eq!(
        rows(&orders),
        vec![
            vec!["TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"],
            vec!["orders", "0", "3", "3", "0"],
            vec!["orders", "1", "-", "700", &uncommitted.to_string()],
            vec!["TOTAL", &uncommitted.to_string()],
        ]
    );
    // Without --topic: every topic the group has committed for, in one table.
    let everything = dev.ok(&["lag", "--group", "g"], b"");
    assert_eq!(
        rows(&everything),
        vec![
            vec!["TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"],
            vec!["audit", "0", "1", "2", "1"],
            vec!["orders", "0", "3", "3", "0"],
            vec!["orders", "1", "-", "700", &uncommitted.to_string()],
            vec!["TOTAL", &(uncommitted + 1).to_string()],
        ]
    );
    // The same figures as one JSON document, for scripts.
    let json: serde_json::Value =
        serde_json::from_str(&dev.ok(&["lag", "--group", "g", "--format", "json"], b"")).unwrap();
    assert_eq!(json["group"], "g");
    assert_eq!(json["lag"], uncommitted + 1);
    let partitions = json["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[0]["topic"], "audit");
    assert_eq!(partitions[0]["committed"], 1);
    assert_eq!(partitions[2]["committed"], serde_json::Value::Null);
    assert_eq!(partitions[2]["high"], 700);
    assert_eq!(partitions[2]["low"], low);
}
