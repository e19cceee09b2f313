//! The exit codes of the broker commands (2 usage, 78 configuration, 69 unreachable, 1 the
//! rest), each with its one-line message, and `-X`/`KAFKA_PROPERTY_*` reaching every client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Dev, BIN};
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

/// Starts `clustera ARGS` with `env` and `stdin`; collect it with [`finish`].
fn start(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Child {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

/// Its exit code and its standard error.
fn finish(child: Child) -> (Option<i32>, String) {
    let out: Output = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (Option<i32>, String) {
    finish(start(args, env, stdin))
}

/// One line on standard error, starting with `start`.
fn one_line(stderr: &str, start: &str) {
    assert!(
        stderr.starts_with(start),
        "expected {start:?}, got {stderr:?}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[
            "consume",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--no-such-flag",
        ][..],
        &[
            "consume",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--offset",
            "first",
        ],
        &[
            "consume",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--format",
            "jsno",
        ],
        &[
            "consume",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--format",
            "%s %q",
        ],
        &[
            "consume",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--offset",
            "stored",
        ],
        &[
            "consume",
            "--brokers",
            "x",
            "--topic",
            "t",
            "--offset",
            "1",
            "--from-beginning",
        ],
        &[
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--format",
            "csv",
        ],
        &["topics", "--brokers", "127.0.0.1:1", "-X", "acks"],
        // No brokers at all: neither --brokers nor KAFKA_BOOTSTRAP_SERVERS.
        &["lag", "--group", "g"],
    ] {
        let (code, stderr) = run(args, &[], b"");
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    let (_, stderr) = run(
        &[
            "consume",
            "--brokers",
            "x",
            "--topic",
            "t",
            "--offset",
            "first",
        ],
        &[],
        b"",
    );
    assert!(
        stderr.contains(
            "\"first\" is not an offset: use beginning, end, stored, N, -N or @TIMESTAMP_MS"
        ),
        "{stderr}"
    );
}

#[test]
fn configuration_errors_exit_78_naming_the_setting() {
    // Checked before any broker is contacted: the address does not matter.
    let b = "127.0.0.1:1";
    let (code, stderr) = run(&["topics", "--brokers", b, "-X", "acks=1"], &[], b"");
    assert_eq!(code, Some(78));
    one_line(&stderr, "clustera: -X acks: acks=1 would commit inputs");
    let (code, stderr) = run(
        &["topics", "--brokers", b, "-X", "no.such.property=1"],
        &[],
        b"",
    );
    assert_eq!(code, Some(78));
    one_line(
        &stderr,
        "clustera: -X no.such.property: rejected by librdkafka: Client config error: No such configuration property: \"no.such.property\"",
    );
    let (code, stderr) = run(
        &["lag", "--brokers", b, "--group", "g", "-X", "group.id=x"],
        &[],
        b"",
    );
    assert_eq!(code, Some(78));
    one_line(
        &stderr,
        "clustera: -X group.id: group.id is managed by the runtime and cannot be overridden",
    );
    let (code, stderr) = run(
        &["consume", "--brokers", b, "--topic", "t"],
        &[("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "soon")],
        b"",
    );
    assert_eq!(code, Some(78));
    one_line(
        &stderr,
        "clustera: KAFKA_PROPERTY_FETCH_WAIT_MAX_MS: rejected by librdkafka",
    );
    let (code, stderr) = run(
        &["produce", "--brokers", b, "--topic", "t"],
        &[("KAFKA_SASL_MECHANISM", "PLAIN")],
        b"",
    );
    assert_eq!(code, Some(78));
    one_line(&stderr, "clustera: KAFKA_SASL_");
}

#[test]
fn an_unreachable_broker_exits_69() {
    // Nothing listens on port 1; the four commands wait out their timeouts side by side.
    let b = "127.0.0.1:1";
    let children = [
        start(&["topics", "--brokers", b], &[], b""),
        start(&["lag", "--brokers", b, "--group", "g"], &[], b""),
        start(&["consume", "--brokers", b, "--topic", "t"], &[], b""),
        start(&["produce", "--brokers", b, "--topic", "t"], &[], b"x\n"),
    ];
    for child in children {
        let (code, stderr) = finish(child);
        assert_eq!(code, Some(69), "{stderr}");
        one_line(
            &stderr,
            "clustera: cannot reach the brokers at 127.0.0.1:1 within 10s",
        );
    }
}

#[test]
fn other_failures_exit_1_and_properties_reach_every_client() {
    let dev = Dev::start(&["one:2"]);
    let b = dev.addr.as_str();
    let (code, stderr) = run(&["consume", "--brokers", b, "--topic", "nope"], &[], b"");
    assert_eq!(code, Some(1));
    one_line(&stderr, "clustera: unknown topic nope");
    let (code, stderr) = run(
        &[
            "consume",
            "--brokers",
            b,
            "--topic",
            "one",
            "--partition",
            "2",
        ],
        &[],
        b"",
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "clustera: topic one has 2 partition(s), numbered 0 to 1: there is no partition 2\n"
    );
    let (code, stderr) = run(
        &[
            "produce",
            "--brokers",
            b,
            "--topic",
            "one",
            "--format",
            "jsonl",
        ],
        &[],
        b"{\"value\":\"ok\"}\n{\"key\":\"k\"}\n",
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "clustera: line 2: no \"value\" (give null for a tombstone) (the 1 record(s) before it were produced to one)\n"
    );
    let (code, stderr) = run(
        &["lag", "--brokers", b, "--group", "nobody", "--topic", "one"],
        &[],
        b"",
    );
    assert_eq!(code, Some(1));
    one_line(&stderr, "clustera: unknown consumer group \"nobody\"");

    // -X and KAFKA_PROPERTY_* are applied, not only checked: the producer refuses a record
    // over its message.max.bytes ...
    let big = format!("{}\n", "x".repeat(2000));
    for (args, env) in [
        (&["-X", "message.max.bytes=1000"][..], &[][..]),
        (&[][..], &[("KAFKA_PROPERTY_MESSAGE_MAX_BYTES", "1000")][..]),
    ] {
        let mut all = vec!["produce", "--brokers", b, "--topic", "one"];
        all.extend(args);
        let (code, stderr) = run(&all, env, big.as_bytes());
        assert_eq!(code, Some(1), "{stderr}");
        one_line(
            &stderr,
            "clustera: producing line 1 to one: Message production error: MessageSizeTooLarge",
        );
    }
    // ... and every other command's client speaks TLS when told to, which this broker does
    // not: it cannot be reached.
    let tls = ["-X", "security.protocol=ssl"];
    let children = [
        start(&[&["topics", "--brokers", b][..], &tls].concat(), &[], b""),
        start(
            &[&["lag", "--brokers", b, "--group", "g"][..], &tls].concat(),
            &[],
            b"",
        ),
        start(
            &[&["consume", "--brokers", b, "--topic", "one"][..], &tls].concat(),
            &[],
            b"",
        ),
        start(
            &["topics", "--brokers", b],
            &[("KAFKA_PROPERTY_SECURITY_PROTOCOL", "ssl")],
            b"",
        ),
    ];
    for child in children {
        let (code, stderr) = finish(child);
        assert_eq!(code, Some(69), "{stderr}");
        one_line(
            &stderr,
            &format!("clustera: cannot reach the brokers at {b}"),
        );
    }
}

#[test]
fn listings_into_a_closed_pipe_exit_0_quietly() {
    let dev = Dev::start(&["listed:1"]);
    let b = dev.addr.as_str();
    let (code, stderr) = run(
        &["produce", "--brokers", b, "--topic", "listed"],
        &[],
        b"a\n",
    );
    assert_eq!(
        (code, stderr.as_str()),
        (Some(0), "produced 1 messages to listed\n")
    );
    let (code, _) = run(
        &[
            "consume",
            "--brokers",
            b,
            "--topic",
            "listed",
            "--group",
            "g",
            "--offset",
            "beginning",
            "--exit-at-end",
        ],
        &[],
        b"",
    );
    assert_eq!(code, Some(0));
    for args in [
        &["topics", "--brokers", b][..],
        &["lag", "--brokers", b, "--group", "g"],
        &[
            "consume",
            "--brokers",
            b,
            "--topic",
            "listed",
            "--offset",
            "beginning",
            "--exit-at-end",
        ],
    ] {
        let mut child = start(args, &[], b"");
        // The reader leaves before the command has connected, let alone printed (and were it
        // slower, the output would only fit in the pipe).
        drop(child.stdout.take());
        let (code, stderr) = finish(child);
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{args:?}");
    }
}
