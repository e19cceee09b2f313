#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;

use super::*;

/// Records what the control API asked of the mock.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<String>>,
    fail_up: bool,
}

impl Faults for Recorder {
    fn broker_down(&self, id: i32) -> Result<(), String> {
        self.calls.borrow_mut().push(format!("down {id}"));
        Ok(())
    }
    fn broker_up(&self, id: i32) -> Result<(), String> {
        self.calls.borrow_mut().push(format!("up {id}"));
        if self.fail_up {
            Err("refused".into())
        } else {
            Ok(())
        }
    }
    fn broker_rtt(&self, id: i32, rtt: Duration) -> Result<(), String> {
        self.calls
            .borrow_mut()
            .push(format!("rtt {id} {}", rtt.as_millis()));
        Ok(())
    }
    fn push_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.calls
            .borrow_mut()
            .push(format!("errors {api:?} {:?}", errors));
    }
    fn clear_errors(&self, api: RDKafkaApiKey) {
        self.calls.borrow_mut().push(format!("clear {api:?}"));
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.borrow_mut())
    }
}

#[test]
fn api_names_are_case_insensitive_and_tolerate_separators() {
    for (text, key, name) in [
        ("Produce", RDKafkaApiKey::Produce, "Produce"),
        ("produce", RDKafkaApiKey::Produce, "Produce"),
        ("OFFSETCOMMIT", RDKafkaApiKey::OffsetCommit, "OffsetCommit"),
        ("offset_commit", RDKafkaApiKey::OffsetCommit, "OffsetCommit"),
        (
            "find-coordinator",
            RDKafkaApiKey::FindCoordinator,
            "FindCoordinator",
        ),
        ("Fetch", RDKafkaApiKey::Fetch, "Fetch"),
        ("JoinGroup", RDKafkaApiKey::JoinGroup, "JoinGroup"),
        ("heartbeat", RDKafkaApiKey::Heartbeat, "Heartbeat"),
        (
            "InitProducerId",
            RDKafkaApiKey::InitProducerId,
            "InitProducerId",
        ),
        ("ApiVersions", RDKafkaApiKey::ApiVersion, "ApiVersion"),
        (" EndTxn ", RDKafkaApiKey::EndTxn, "EndTxn"),
    ] {
        assert_eq!(parse_api(text).unwrap(), (key, name), "{text}");
    }
}

#[test]
fn unknown_and_unsupported_api_names_are_refused_by_name() {
    let e = parse_api("Produse").unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.starts_with("unknown API name \"Produse\""), "{e}");
    assert!(
        e.message.contains("Produce, Fetch"),
        "lists the choices: {e}"
    );
    assert!(parse_api("").is_err());
    let e = parse_api("metadata").unwrap_err();
    assert!(
        e.message
            .starts_with("API Metadata cannot be failed on demand"),
        "{e}"
    );
}

#[test]
fn error_codes_are_kafka_protocol_numbers() {
    assert_eq!(
        parse_error_code(6).unwrap(),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION
    );
    assert_eq!(
        parse_error_code(-1).unwrap(),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN
    );
    assert_eq!(
        parse_error_code(129).unwrap(),
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBOOTSTRAP_REQUIRED
    );
    assert_eq!(
        error_name(parse_error_code(7).unwrap()),
        "REQUEST_TIMED_OUT"
    );
    let zero = parse_error_code(0).unwrap_err();
    assert!(zero.message.contains("no error"), "{zero}");
    // librdkafka's internal codes, gaps in the numbering, the end marker and overflow.
    for bad in [-195, -2, 105, 130, 9999, i64::from(i32::MAX) + 1] {
        let e = parse_error_code(bad).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message
                .starts_with(&format!("unknown Kafka error code {bad}:")),
            "{e}"
        );
    }
}

#[test]
fn broker_selectors_are_checked_against_the_cluster() {
    assert_eq!(parse_brokers("all", 3).unwrap(), Brokers::All);
    assert_eq!(parse_brokers("ALL", 3).unwrap(), Brokers::All);
    assert_eq!(parse_brokers("3", 3).unwrap(), Brokers::One(3));
    for bad in ["0", "4", "-1", "one", ""] {
        let e = parse_brokers(bad, 3).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(
            e.message,
            format!("unknown broker {bad}: the brokers are 1 to 3 (or all)")
        );
    }
    assert_eq!(
        parse_brokers("2", 1).unwrap_err().message,
        "unknown broker 2: the brokers are 1 (or all)"
    );
}

#[test]
fn request_bodies_are_validated() {
    assert_eq!(
        down_request("1", b"", 1).unwrap(),
        Action::Down {
            brokers: Brokers::One(1),
            duration: None
        }
    );
    assert_eq!(
        down_request("all", br#"{"for_seconds": 10}"#, 2).unwrap(),
        Action::Down {
            brokers: Brokers::All,
            duration: Some(Duration::from_secs(10))
        }
    );
    for (body, needle) in [
        (
            r#"{"for_seconds": 0}"#,
            "for_seconds 0: expected 1 to 86400",
        ),
        (r#"{"for_seconds": -3}"#, "invalid JSON body"),
        (r#"{"for_second": 3}"#, "unknown field `for_second`"),
        ("[", "invalid JSON body"),
    ] {
        let e = down_request("1", body.as_bytes(), 1).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(e.message.contains(needle), "{body}: {e}");
    }
    assert_eq!(
        up_request("2", b"{}", 2).unwrap(),
        Action::Up {
            brokers: Brokers::One(2)
        }
    );
    assert!(up_request("1", br#"{"for_seconds": 1}"#, 1).is_err());
    assert_eq!(
        rtt_request("1", br#"{"ms": 250}"#, 1).unwrap(),
        Action::Rtt {
            brokers: Brokers::One(1),
            ms: 250
        }
    );
    assert!(rtt_request("1", br#"{"ms": 600001}"#, 1)
        .unwrap_err()
        .message
        .contains("ms 600001: expected 0 to 600000"));
    assert!(rtt_request("1", b"{}", 1)
        .unwrap_err()
        .message
        .contains("missing field `ms`"));

    assert_eq!(
        errors_request(br#"{"api": "produce", "code": 6, "count": 3}"#).unwrap(),
        Action::Errors {
            api: RDKafkaApiKey::Produce,
            api_name: "Produce",
            code: RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            count: 3
        }
    );
    for (body, needle) in [
        (
            r#"{"api": "Nope", "code": 6, "count": 1}"#,
            "unknown API name",
        ),
        (
            r#"{"api": "Produce", "code": 1234, "count": 1}"#,
            "unknown Kafka error code 1234",
        ),
        (
            r#"{"api": "Produce", "code": 6, "count": 0}"#,
            "count 0: expected 1 to 10000",
        ),
        (r#"{"api": "Produce", "code": 6}"#, "missing field `count`"),
    ] {
        let e = errors_request(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains(needle), "{body}: {e}");
    }
    assert!(clear_errors_request("nope").is_err());
}

#[test]
fn down_for_a_while_comes_back_up_and_up_cancels_the_timer() {
    let faults = Recorder::default();
    let mut cluster = Cluster::new(2, "127.0.0.1:9092".into());
    let t0 = Instant::now();
    let message = cluster
        .apply(
            &faults,
            &down_request("all", br#"{"for_seconds": 5}"#, 2).unwrap(),
            t0,
        )
        .unwrap();
    assert_eq!(message, "all brokers down for 5 s");
    assert_eq!(faults.take(), ["down 1", "down 2"]);
    assert_eq!(cluster.next_up_at(), Some(t0 + Duration::from_secs(5)));
    let doc = cluster.describe(t0 + Duration::from_millis(1500));
    assert_eq!(doc["brokers"][0]["state"], "down");
    assert_eq!(doc["brokers"][1]["up_in_seconds"], 4);

    // Broker 2 is brought up by hand: its timer is gone, broker 1's stays.
    cluster
        .apply(&faults, &up_request("2", b"", 2).unwrap(), t0)
        .unwrap();
    assert_eq!(faults.take(), ["up 2"]);
    assert!(cluster
        .bring_up_due(&faults, t0 + Duration::from_secs(4))
        .is_empty());
    assert_eq!(
        cluster.bring_up_due(&faults, t0 + Duration::from_secs(5)),
        [1]
    );
    assert_eq!(faults.take(), ["up 1"]);
    assert_eq!(cluster.next_up_at(), None);
    let doc = cluster.describe(t0);
    assert_eq!(doc["brokers"][0]["state"], "up");
    assert_eq!(doc["brokers"][0]["up_in_seconds"], Value::Null);

    // A later down without a duration is not undone by an old timer.
    cluster
        .apply(
            &faults,
            &down_request("1", br#"{"for_seconds": 1}"#, 2).unwrap(),
            t0,
        )
        .unwrap();
    cluster
        .apply(&faults, &down_request("1", b"", 2).unwrap(), t0)
        .unwrap();
    assert!(cluster
        .bring_up_due(&faults, t0 + Duration::from_secs(60))
        .is_empty());
    assert_eq!(cluster.describe(t0)["brokers"][0]["state"], "down");
}

#[test]
fn a_broker_that_cannot_come_back_is_not_retried_forever() {
    let faults = Recorder {
        fail_up: true,
        ..Recorder::default()
    };
    let mut cluster = Cluster::new(1, "b".into());
    let t0 = Instant::now();
    cluster
        .apply(
            &faults,
            &down_request("1", br#"{"for_seconds": 1}"#, 1).unwrap(),
            t0,
        )
        .unwrap();
    assert!(cluster
        .bring_up_due(&faults, t0 + Duration::from_secs(1))
        .is_empty());
    assert_eq!(cluster.next_up_at(), None);
}

#[test]
fn errors_and_rtt_reach_the_mock_and_are_described() {
    let faults = Recorder::default();
    let mut cluster = Cluster::new(1, "b".into());
    let now = Instant::now();
    let message = cluster
        .apply(
            &faults,
            &errors_request(br#"{"api": "Produce", "code": 6, "count": 3}"#).unwrap(),
            now,
        )
        .unwrap();
    assert_eq!(
        message,
        "next 3 Produce request(s) fail with NOT_LEADER_FOR_PARTITION (6)"
    );
    assert_eq!(
        faults.take(),
        [
            "errors Produce [RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, \
          RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION]"
        ]
    );
    let doc = cluster.describe(now);
    assert_eq!(
        doc["injected_errors"],
        json!([{"api": "Produce", "code": 6, "name": "NOT_LEADER_FOR_PARTITION", "count": 3}])
    );
    cluster
        .apply(
            &faults,
            &rtt_request("all", br#"{"ms": 40}"#, 1).unwrap(),
            now,
        )
        .unwrap();
    assert_eq!(faults.take(), ["rtt 1 40"]);
    assert_eq!(cluster.describe(now)["brokers"][0]["rtt_ms"], 40);
    cluster
        .apply(&faults, &clear_errors_request("PRODUCE").unwrap(), now)
        .unwrap();
    assert_eq!(faults.take(), ["clear Produce"]);
    assert_eq!(cluster.describe(now)["injected_errors"], json!([]));
}
