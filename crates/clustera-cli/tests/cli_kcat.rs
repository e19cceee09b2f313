//! `clustera consume` and `clustera produce` as kcat users expect them, run as a user runs
//! them against `clustera dev`, and compared with kcat itself on the same records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Dev, BIN};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};

impl Dev {
    /// `clustera ARGS --brokers ADDR`, with `stdin` as its input.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--brokers", &self.addr]);
        clustera(&all, stdin, &[])
    }

    /// Like [`Dev::run`], and it must succeed: its standard output.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        succeeded(&self.run(args, stdin))
    }
}

fn clustera(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn succeeded(out: &Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// kcat, which the test suite installs (scripts/test.sh); a clear failure without it.
fn kcat(args: &[&str]) -> Vec<u8> {
    let out = Command::new("kcat")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kcat is needed to compare against it ({e}): install it with \
                 `apt-get install kcat` (scripts/test.sh does)"
            )
        });
    succeeded(&out)
}

/// Records that exercise every rendering case: keys (none, empty, text), values (tombstone,
/// empty, bytes with a NUL and invalid UTF-8), headers (repeated, null, empty, binary).
const RECORDS: &str = r#"{"key":"k1","value":"plain value","headers":{"h":["1","2"],"n":null,"e":""},"partition":0}
{"key":null,"value":null,"partition":0}
{"key":"","value":"","partition":0}
{"key":"bin","value":"/wBhYg==","value_encoding":"base64","headers":{"b":{"base64":"/w=="}},"partition":0}
{"key":"ü","value":"tab\there","partition":1,"timestamp":1700000000000}
{"value":"no key","partition":1}
"#;

#[test]
fn format_strings_give_the_same_bytes_as_kcat() {
    let dev = Dev::start(&["fmt:2"]);
    dev.ok(
        &["produce", "--topic", "fmt", "--format", "jsonl"],
        RECORDS.as_bytes(),
    );
    let formats = [
        "%t|%p|%o|%k|%K|%s|%S|%h|%T\\n",
        "%k\\t%s\\n",
        "[%s]%%\\r\\n",
        "%R%s",
        "\\x41\\x4f \\65 \\0101 \\q \\xff %o\\n",
        "offset %o: key %k: %s\\n",
        // Corners of kcat's escapes: a number read as far as it goes, cut to a byte; a NUL
        // ending the run; a lone backslash at the end; unknown escapes kept as the letter.
        "\\x4g|\\\\|ü%o\\n",
        "a\\08b%o\\n",
        "\\x0x41|\\0x41|\\999|\\12345%o\\n",
        "%o\\",
        "%%%o%%\\e\\a\\n",
    ];
    for partition in ["0", "1"] {
        for format in formats {
            let ours = dev.ok(
                &[
                    "consume",
                    "--topic",
                    "fmt",
                    "--partition",
                    partition,
                    "--offset",
                    "beginning",
                    "--exit-at-end",
                    "--format",
                    format,
                ],
                b"",
            );
            let theirs = kcat(&[
                "-C",
                "-b",
                &dev.addr,
                "-t",
                "fmt",
                "-p",
                partition,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                format,
            ]);
            assert_eq!(
                ours,
                theirs,
                "partition {partition}, format {format:?}:\n ours:  {:?}\n kcat:  {:?}",
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }
    // And what they both print, spelled out for one format.
    let out = dev.ok(
        &[
            "consume",
            "--topic",
            "fmt",
            "--partition",
            "0",
            "--offset",
            "beginning",
            "--exit-at-end",
            "--format",
            "%o|%k|%K|%s|%S|%h\\n",
        ],
        b"",
    );
    assert_eq!(
        out,
        b"0|k1|2|plain value|11|e=,h=1,h=2,n=NULL\n1||-1||-1|\n2||0||0|\n3|bin|3|\xff\x00ab|4|b=\xff\n"
    );
    // Text is kcat's -f '%k\t%s\n'.
    let text = dev.ok(
        &[
            "consume",
            "--topic",
            "fmt",
            "--partition",
            "1",
            "--offset",
            "beginning",
            "--exit-at-end",
        ],
        b"",
    );
    assert_eq!(text, "ü\ttab\there\n\tno key\n".as_bytes());
}

#[test]
fn json_lines_round_trip_and_kcat_reads_them_back() {
    let dev = Dev::start(&["rt:2", "copy:2", "fromkcat:1"]);
    dev.ok(
        &["produce", "--topic", "rt", "--format", "jsonl"],
        RECORDS.as_bytes(),
    );
    let read = |topic: &str| -> Vec<serde_json::Value> {
        let out = dev.ok(
            &[
                "consume",
                "--topic",
                topic,
                "--offset",
                "beginning",
                "--exit-at-end",
                "--format",
                "json",
            ],
            b"",
        );
        let mut records: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        records.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
        records
    };
    let records = read("rt");
    assert_eq!(records.len(), 6);
    let first = &records[0];
    assert_eq!(first["key"], "k1");
    assert_eq!(first["value"], "plain value");
    assert_eq!(
        first["headers"],
        serde_json::json!({"e": "", "h": ["1", "2"], "n": null})
    );
    assert!(first["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(records[1]["key"], serde_json::Value::Null);
    assert_eq!(records[1]["value"], serde_json::Value::Null, "a tombstone");
    assert_eq!(records[3]["value"], "/wBhYg==");
    assert_eq!(records[3]["value_encoding"], "base64");
    assert_eq!(
        records[3]["headers"],
        serde_json::json!({"b": {"base64": "/w=="}})
    );
    assert_eq!(records[4]["timestamp"], 1_700_000_000_000_i64);
    assert_eq!(records[4]["key"], "ü");

    // What consume prints, produce takes back (timestamps included): the copy reads back
    // identical but for its topic.
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    dev.ok(
        &["produce", "--topic", "copy", "--format", "jsonl"],
        lines.as_bytes(),
    );
    let mut copied = read("copy");
    for r in &mut copied {
        assert_eq!(r["topic"], "copy");
        r["topic"] = "rt".into();
    }
    assert_eq!(copied, records);

    // kcat -J reads what clustera produced: same keys, values, headers in order, partitions.
    let json = kcat(&[
        "-C",
        "-b",
        &dev.addr,
        "-t",
        "rt",
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-J",
    ]);
    let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), 4);
    assert_eq!(theirs[0]["key"], "k1");
    assert_eq!(theirs[0]["payload"], "plain value");
    assert_eq!(
        theirs[0]["headers"],
        serde_json::json!(["e", "", "h", "1", "h", "2", "n", null])
    );
    assert_eq!(theirs[1]["key"], serde_json::Value::Null);
    assert_eq!(theirs[1]["payload"], serde_json::Value::Null);
    assert_eq!(theirs[2]["key"], "");
    assert_eq!(theirs[2]["payload"], "");

    // And the reverse: what kcat produced, clustera reads.
    let mut child = Command::new("kcat")
        .args([
            "-P", "-b", &dev.addr, "-t", "fromkcat", "-K", ":", "-H", "a=1", "-H", "a=2", "-Z",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat is needed: install it with `apt-get install kcat` (scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"k1:v1\n:v2\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let read_back = read("fromkcat");
    let strip = |r: &serde_json::Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("timestamp");
        r
    };
    assert_eq!(
        read_back.iter().map(strip).collect::<Vec<_>>(),
        vec![
            serde_json::json!({"topic": "fromkcat", "partition": 0, "offset": 0, "key": "k1",
                               "value": "v1", "headers": {"a": ["1", "2"]}}),
            serde_json::json!({"topic": "fromkcat", "partition": 0, "offset": 1, "key": null,
                               "value": "v2", "headers": {"a": ["1", "2"]}}),
        ]
    );
}

/// The offsets (as `partition:offset`) that `clustera consume ARGS` prints.
fn offsets(dev: &Dev, args: &[&str]) -> Vec<String> {
    let mut all = vec!["consume", "--topic", "pick", "--format", "%p:%o\\n"];
    all.extend(args);
    String::from_utf8(dev.ok(&all, b""))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn partition_offset_count_and_exit_at_end_choose_what_is_read() {
    let dev = Dev::start(&["pick:2"]);
    let input: String = (0..5)
        .flat_map(|i| {
            [
                format!("{{\"value\":\"a{i}\",\"partition\":0}}\n"),
                format!("{{\"value\":\"b{i}\",\"partition\":1}}\n"),
            ]
        })
        .collect();
    dev.ok(
        &["produce", "--topic", "pick", "--format", "jsonl"],
        input.as_bytes(),
    );
    // Lines go by key; --partition puts all of them in one.
    dev.ok(
        &["produce", "--topic", "pick", "--partition", "1"],
        b"c0\nc1\n",
    );
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    assert_eq!(
        offsets(
            &dev,
            &["--partition", "1", "--offset", "beginning", "--exit-at-end"]
        ),
        strings(&["1:0", "1:1", "1:2", "1:3", "1:4", "1:5", "1:6"])
    );
    assert_eq!(
        offsets(
            &dev,
            &["--partition", "0", "--offset", "3", "--exit-at-end"]
        ),
        strings(&["0:3", "0:4"])
    );
    assert_eq!(
        offsets(
            &dev,
            &["--partition", "1", "--offset", "-2", "--exit-at-end"]
        ),
        strings(&["1:5", "1:6"])
    );
    // More than there is starts at the oldest record.
    assert_eq!(
        offsets(&dev, &["--partition", "0", "--offset=-50", "--exit-at-end"]),
        strings(&["0:0", "0:1", "0:2", "0:3", "0:4"])
    );
    assert_eq!(
        offsets(
            &dev,
            &["--partition", "0", "--offset", "beginning", "--count", "2"]
        ),
        strings(&["0:0", "0:1"])
    );
    assert_eq!(
        offsets(&dev, &["--offset", "end", "--exit-at-end"]),
        Vec::<String>::new()
    );
    let mut both = offsets(&dev, &["--offset", "beginning", "--exit-at-end"]);
    both.sort();
    assert_eq!(both.len(), 12);
    assert_eq!(both.first().unwrap(), "0:0");
    assert_eq!(both.last().unwrap(), "1:6");
    // The mock cluster answers every lookup by time with "no such record" (its ListOffsets
    // handler has a FIXME there), so only that branch can be shown here: nothing is read.
    assert_eq!(
        offsets(&dev, &["--offset", "@1700000000000", "--exit-at-end"]),
        Vec::<String>::new()
    );

    // A group with --exit-at-end reads to the end, commits, and the next run finds nothing.
    // (KIP-848's protocol, which -X passes on, spares the second member the mock's wait for
    // the first one's session to expire.)
    let group = [
        "--group",
        "g",
        "-X",
        "group.protocol=consumer",
        "--exit-at-end",
    ];
    let mut first = offsets(&dev, &[&group[..], &["--from-beginning"]].concat());
    first.sort();
    assert_eq!(first, both);
    assert_eq!(offsets(&dev, &group), Vec::<String>::new());
    // A new group starts where -X auto.offset.reset says, when no flag says otherwise.
    let fresh = [
        "--group",
        "fresh",
        "-X",
        "group.protocol=consumer",
        "--exit-at-end",
        "-X",
        "auto.offset.reset=earliest",
    ];
    let mut from_reset = offsets(&dev, &fresh);
    from_reset.sort();
    assert_eq!(from_reset, both);
    // Reading chosen partitions as a group commits for it outside the group's membership
    // (the mock refuses that for a group that has had members, as g has, so h is used), and
    // --offset stored resumes there.
    assert_eq!(
        offsets(
            &dev,
            &[
                "--group",
                "h",
                "--partition",
                "0",
                "--offset",
                "3",
                "--count",
                "1"
            ]
        ),
        strings(&["0:3"])
    );
    dev.ok(&["produce", "--topic", "pick", "--partition", "0"], b"d\n");
    assert_eq!(
        offsets(
            &dev,
            &[
                "--group",
                "h",
                "--partition",
                "0",
                "--offset",
                "stored",
                "--exit-at-end"
            ]
        ),
        strings(&["0:4", "0:5"])
    );
}

#[test]
fn ctrl_c_and_sigterm_commit_what_was_printed() {
    let dev = Dev::start(&["sig:1"]);
    dev.ok(&["produce", "--topic", "sig"], b"one\ntwo\nthree\n");
    for (signal, group) in [("INT", "interrupted"), ("TERM", "terminated")] {
        let mut child = Command::new(BIN)
            .args([
                "consume",
                "--brokers",
                &dev.addr,
                "--topic",
                "sig",
                "--group",
                group,
            ])
            // Bounded: it stops by itself after a minute without records.
            .args(["--from-beginning", "--timeout", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            seen.push(line);
        }
        assert_eq!(seen, ["\tone\n", "\ttwo\n", "\tthree\n"]);
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut rest = String::new();
        lines.read_to_string(&mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(rest, "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "SIG{signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lag =
            String::from_utf8(dev.ok(&["lag", "--group", group, "--topic", "sig"], b"")).unwrap();
        let rows: Vec<Vec<&str>> = lag
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[1], ["sig", "0", "3", "3", "0"], "SIG{signal}: {lag}");
    }
}

#[test]
fn a_closed_pipe_ends_quietly_and_commits_nothing() {
    let dev = Dev::start(&["pipe:1"]);
    // Far more than a pipe holds, so the writer meets the closed end.
    let lines: String = (0..5000).map(|i| format!("{i:0>100}\n")).collect();
    dev.ok(&["produce", "--topic", "pipe"], lines.as_bytes());
    let mut child = Command::new(BIN)
        .args([
            "consume",
            "--brokers",
            &dev.addr,
            "--topic",
            "pipe",
            "--group",
            "peek",
        ])
        .args(["--offset", "beginning", "--exit-at-end"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone, as `| head -1` leaves.
    let out = child.wait_with_output().unwrap();
    assert_eq!(first, format!("\t{:0>100}\n", 0));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let lag = dev.run(&["lag", "--group", "peek", "--topic", "pipe"], b"");
    assert_eq!(lag.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&lag.stderr),
        "clustera: unknown consumer group \"peek\": it has no committed offsets for topic pipe \
         (a group that has not committed yet looks the same)\n"
    );
}
