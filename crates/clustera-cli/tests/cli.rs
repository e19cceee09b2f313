//! The `clustera` command against its own development broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Dev, BIN};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn clustera(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn produce_consume_and_lag_round_trip() {
    let dev = Dev::start(&["rt:3"]);
    let b = dev.addr.as_str();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    let expected: BTreeMap<String, String> = (0..1000)
        .map(|i| (format!("key-{i}"), format!("value {i} ü")))
        .collect();
    let text: String = expected.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    std::fs::write(&file, text).unwrap();

    let out = clustera(
        &[
            "produce",
            "--brokers",
            b,
            "--topic",
            "rt",
            "--key-separator",
            ":",
            "--header",
            "source=test",
            file.to_str().unwrap(),
        ],
        None,
    );
    ok(&out);

    let out = clustera(
        &[
            "consume",
            "--brokers",
            b,
            "--topic",
            "rt",
            "--from-beginning",
            "--count",
            "1000",
            "--timeout",
            "20",
            "--format",
            "json",
        ],
        None,
    );
    let got: BTreeMap<String, String> = ok(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["topic"], "rt");
            assert_eq!(v["headers"]["source"], "test");
            (
                v["key"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected, "consumed back identical");

    // No group has read it yet: lag refuses an unknown group.
    let out = clustera(
        &["lag", "--brokers", b, "--group", "readers", "--topic", "rt"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown consumer group"));

    let out = clustera(
        &[
            "consume",
            "--brokers",
            b,
            "--topic",
            "rt",
            "--group",
            "readers",
            "--from-beginning",
            "--count",
            "1000",
            "--timeout",
            "30",
        ],
        None,
    );
    assert_eq!(ok(&out).lines().count(), 1000);
    let out = ok(&clustera(
        &["lag", "--brokers", b, "--group", "readers", "--topic", "rt"],
        None,
    ));
    let total = out.lines().last().unwrap();
    assert!(
        total.starts_with("TOTAL") && total.trim_end().ends_with(" 0"),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        1 + 3 + 1,
        "header, three partitions, total:\n{out}"
    );

    // Standard input works too, and topics lists what exists.
    ok(&clustera(
        &["produce", "--brokers", b, "--topic", "rt", "-"],
        Some(b"one\ntwo\n"),
    ));
    let topics = ok(&clustera(&["topics", "--brokers", b], None));
    assert!(topics.lines().any(|l| l == "rt\t3"), "{topics}");
}

#[test]
fn errors_are_one_line_and_never_hang() {
    let started = Instant::now();
    let out = clustera(&["produce", "--no-such-flag"], None);
    assert_eq!(out.status.code(), Some(2));

    let out = clustera(&["topics", "--brokers", "127.0.0.1:1"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the brokers at 127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = clustera(&["lag", "--group", "g"], None);
    assert!(!out.status.success(), "no brokers given");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--brokers"));

    let dev = Dev::start(&[]);
    let out = clustera(
        &[
            "consume",
            "--brokers",
            &dev.addr,
            "--topic",
            "nope",
            "--count",
            "1",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown topic nope"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded by timeouts"
    );
}

#[test]
fn new_scaffolds_a_complete_kernel_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("order-enricher");
    ok(&clustera(
        &["new", "order-enricher", "--path", target.to_str().unwrap()],
        None,
    ));
    for file in [
        "Cargo.toml",
        "src/main.rs",
        ".env.template",
        "Dockerfile",
        "README.md",
        ".gitignore",
    ] {
        let text = std::fs::read_to_string(target.join(file)).unwrap();
        assert!(!text.contains("{{"), "{file} has an unfilled placeholder");
        assert!(
            text.contains("order-enricher") || file == ".gitignore",
            "{file} names the kernel"
        );
    }
    let main = std::fs::read_to_string(target.join("src/main.rs")).unwrap();
    assert!(main.contains("struct OrderEnricher") && main.contains("TestDriver"));
    let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
    // By version, so it builds anywhere; never the absolute path of this checkout.
    assert!(
        manifest.contains(&format!("clustera = \"{}\"", env!("CARGO_PKG_VERSION"))),
        "{manifest}"
    );
    let from_git = dir.path().join("from-git");
    ok(&clustera(
        &[
            "new",
            "from-git",
            "--path",
            from_git.to_str().unwrap(),
            "--clustera-git",
            "https://example.org/clustera.git",
            "--clustera-rev",
            "v0.1.0",
        ],
        None,
    ));
    let manifest = std::fs::read_to_string(from_git.join("Cargo.toml")).unwrap();
    assert!(
        manifest
            .contains(r#"clustera = { git = "https://example.org/clustera.git", rev = "v0.1.0" }"#),
        "{manifest}"
    );

    let again = clustera(
        &["new", "order-enricher", "--path", target.to_str().unwrap()],
        None,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = clustera(
        &[
            "new",
            "Bad_Name",
            "--path",
            dir.path().join("x").to_str().unwrap(),
        ],
        None,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid kernel name"));
}

#[test]
fn kcat_short_flags_give_what_the_long_ones_give() {
    let dev = Dev::start(&["short:2"]);
    let b = dev.addr.as_str();
    let lines: String = (0..50).map(|i| format!("k{i}:v{i}\n")).collect();
    ok(&clustera(
        &[
            "produce",
            "-b",
            b,
            "-t",
            "short",
            "-K",
            ":",
            "-X",
            "linger.ms=5",
        ],
        Some(lines.as_bytes()),
    ));
    let long = ok(&clustera(
        &[
            "consume",
            "--brokers",
            b,
            "--topic",
            "short",
            "--offset",
            "beginning",
            "--exit-at-end",
            "--format",
            "%p %o %k=%s\n",
        ],
        None,
    ));
    let short = ok(&clustera(
        &[
            "consume",
            "-b",
            b,
            "-t",
            "short",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%p %o %k=%s\n",
        ],
        None,
    ));
    assert_eq!(long.lines().count(), 50);
    // Partitions interleave as they arrive; each partition's lines are in order.
    let sorted = |text: &str| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_by_key(|l| {
            let mut f = l.split(' ');
            let p: i32 = f.next().unwrap().parse().unwrap();
            let o: i64 = f.next().unwrap().parse().unwrap();
            (p, o)
        });
        lines.join("\n")
    };
    assert_eq!(sorted(&short), sorted(&long));
    let one = ok(&clustera(
        &[
            "consume",
            "-b",
            b,
            "-t",
            "short",
            "-p",
            "1",
            "-o",
            "beginning",
            "-c",
            "3",
            "-f",
            "%p\n",
        ],
        None,
    ));
    assert_eq!(one, "1\n1\n1\n");
}

#[test]
fn completions_generate_and_help_shows_examples_and_settings() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&clustera(&["completions", shell], None));
        for word in ["consume", "outbox", "broker-count"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = clustera(&["completions", "tcsh"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    let consume = ok(&clustera(&["consume", "--help"], None));
    assert!(
        consume.contains("Examples:") && consume.contains("-t, --topic"),
        "{consume}"
    );
    let portal = ok(&clustera(&["portal", "--help"], None));
    for var in [
        "PORTAL_API_BASE_URL",
        "PORTAL_ALLOWED_ENDPOINTS",
        "OAUTH2_TOKEN_URL",
    ] {
        assert!(portal.contains(var), "portal --help lacks {var}");
    }
    let outbox = ok(&clustera(&["outbox", "relay", "--help"], None));
    for var in [
        "DATABASE_URL",
        "CLUSTERA_OUTBOX_SNAPSHOT",
        "CLUSTERA_OUTBOX_FORMAT",
    ] {
        assert!(outbox.contains(var), "outbox relay --help lacks {var}");
    }
}
