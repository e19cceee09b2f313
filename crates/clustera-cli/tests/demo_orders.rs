//! `clustera demo orders` as a process: seed 002's order-processing system, checked with
//! exact counts from its JSON summary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use serde_json::Value;

fn demo(args: &[&str]) -> Value {
    let out = Command::new(common::BIN)
        .args(["demo", "orders", "--json"])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn kernel<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no kernel {name}: {summary}"))
}

fn final_count(summary: &Value, state: &str) -> (u64, u64) {
    let f = summary["finals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["state"] == state)
        .unwrap();
    (
        f["expected"].as_u64().unwrap(),
        f["recorded"].as_u64().unwrap(),
    )
}

/// 300 orders: one in 25 poison (12), one in 20 of the valid ones with the sold-out product
/// (15) and one in 20 submitted twice (15).
#[test]
fn every_order_ends_once_poison_is_dead_lettered_and_the_replay_changes_nothing() {
    let s = demo(&["--orders", "300"]);
    assert_eq!(s["problems"], Value::Array(vec![]), "{s}");
    assert_eq!(s["submitted"], 300);
    assert_eq!(s["poison"], 12);
    assert_eq!(s["resubmitted"], 15);
    assert_eq!(final_count(&s, "out of stock"), (15, 15));
    let (shipped, shipped_recorded) = final_count(&s, "shipped");
    let (declined, declined_recorded) = final_count(&s, "payment declined");
    assert_eq!((shipped, declined), (shipped_recorded, declined_recorded));
    assert_eq!(shipped + declined, 288 - 15);
    assert!(shipped > 200 && declined > 0, "{s}");
    // The read side: one notification per valid order, nothing twice despite the 15
    // resubmissions and the replay of all 315 requests.
    assert_eq!(s["notifications"], 288);
    assert_eq!(s["shipments"].as_u64(), Some(shipped));
    assert_eq!(s["charges"].as_u64(), Some(shipped + declined));

    // Dead letters: each poison request once per delivery (the flow, then the replay).
    assert_eq!(s["dead_lettered_requests"], 12);
    assert_eq!(s["dead_letter_records"], 24);
    for kind in ["not JSON", "quantity 0", "unknown product", "no lines"] {
        assert_eq!(s["dead_letters_by_kind"][kind], 3, "{kind}: {s}");
    }
    assert!(s["dead_letter_errors"]["unknown product"]
        .as_str()
        .unwrap()
        .contains("\"flux-capacitor\" is not in the catalog"));
    for name in ["orders", "orders (replay)"] {
        let k = kernel(&s, name);
        assert_eq!(k["dead_lettered"], 12, "{name}");
        assert_eq!(k["acked"], 315 - 12, "{name}");
    }
    for name in ["inventory", "payment", "shipping", "notification"] {
        assert_eq!(kernel(&s, name)["dead_lettered"], 0, "{name}");
    }

    // The gateway's 503s: retried, one retry each, never dead-lettered.
    let payment = kernel(&s, "payment");
    assert_eq!(payment["retries"], s["gateway_503s_expected"]);
    assert!(payment["retries"].as_u64().unwrap() > 0);

    // Every delivery a handler acknowledged was done now, absorbed as a repeat, or not for
    // it; and nothing was skipped.
    let repeats = |name: &str| s["repeats"][name].as_u64().unwrap();
    let count = |name: &str, field: &str| kernel(&s, name)[field].as_u64().unwrap();
    for (name, done_now) in [
        ("payment", s["charges"].as_u64().unwrap()),
        ("shipping", shipped),
        ("notification", 288),
    ] {
        assert_eq!(
            count(name, "acked"),
            done_now + repeats(name) + count(name, "ignored"),
            "{name}: {s}"
        );
        assert_eq!(count(name, "skipped"), 0, "{name}");
    }
    // Payment ignores the out-of-stock answers: 15 orders, each delivered for the first
    // submission and the replay (none of them was resubmitted: i % 20 is 7, not 3).
    assert_eq!(count("payment", "ignored"), 15 * 2);
    // The storefront's 15 resubmissions, then all 303 valid requests of the replay.
    assert_eq!(repeats("orders"), 15 + 303);
}

#[test]
fn without_the_replay_only_the_resubmissions_are_repeats() {
    let s = demo(&["--orders", "100", "--no-replay", "--partitions", "2"]);
    assert_eq!(s["problems"], Value::Array(vec![]), "{s}");
    assert_eq!(s["poison"], 4);
    assert_eq!(s["dead_letter_records"], 4);
    assert_eq!(s["notifications"], 96);
    assert_eq!(s["repeats"]["orders"], s["resubmitted"]);
    assert_eq!(s["resubmitted"], 5);
    assert!(s["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["name"] != "orders (replay)"));
}

#[test]
fn the_outbox_demo_stays_the_default_and_orders_takes_no_outbox_flags() {
    let out = Command::new(common::BIN)
        .args(["demo", "orders", "--staged"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--staged"));
    let out = Command::new(common::BIN)
        .args(["demo", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("orders") && help.contains("--staged"),
        "{help}"
    );
}

#[test]
fn runs_on_clustera_dev_and_refuses_topics_that_are_not_new() {
    let dev = common::Dev::start(&[]);
    let s = demo(&["--orders", "100", "--brokers", &dev.addr]);
    assert_eq!(s["problems"], Value::Array(vec![]), "{s}");
    assert_eq!(s["notifications"], 96);
    assert_eq!(s["dead_letter_records"], 8);
    assert_eq!(s["dead_lettered_requests"], 4);

    // A second run would count the first run's records: refused, naming the topic.
    let out = Command::new(common::BIN)
        .args(["demo", "orders", "--orders", "10", "--brokers", &dev.addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("topic orders.requests on") && stderr.contains("is not new"),
        "{stderr}"
    );
}
