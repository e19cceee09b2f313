use std::collections::BTreeMap;

use base64::Engine;

use super::*;

const CERT: &str = include_str!("testdata/client.crt");
const KEY: &str = include_str!("testdata/client.key");

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (k, v) in pairs {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars("demo", &["demo-input".to_owned()], &vars(pairs))
}

fn error_for(pairs: &[(&str, &str)]) -> ConfigError {
    load(pairs).expect_err("configuration should be rejected")
}

#[test]
fn defaults_follow_the_seed() {
    let c = load(&[]).unwrap();
    assert_eq!(c.topics, vec!["demo-input"]);
    assert_eq!(c.group_id, "demo-consumer-group");
    assert_eq!(c.client_id, format!("demo-{}", std::process::id()));
    assert!(c.tls.is_none());
    assert_eq!(c.runtime, RuntimeSettings::default());
    assert_eq!(c.runtime.dead_letter_topic_for("orders"), "orders.dlq");
}

#[test]
fn overrides_apply() {
    let c = load(&[
        ("KAFKA_TOPIC", "a, b"),
        ("KAFKA_CONSUMER_GROUP", "g"),
        ("KAFKA_CLIENT_ID", "c"),
        ("CLUSTERA_MAX_ATTEMPTS", "0"),
        ("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "50"),
        ("KAFKA_MAX_POLL_INTERVAL_MS", "600000"),
    ])
    .unwrap();
    assert_eq!(c.topics, vec!["a", "b"]);
    assert_eq!((c.group_id.as_str(), c.client_id.as_str()), ("g", "c"));
    assert_eq!(c.runtime.max_attempts, None, "0 means retry forever");
    assert_eq!(c.properties["fetch.wait.max.ms"].expose(), "50");
    assert_eq!(c.properties["max.poll.interval.ms"].expose(), "600000");
}

#[test]
fn missing_bootstrap_is_named() {
    let e = Config::from_vars("demo", &["t".to_owned()], &BTreeMap::new()).unwrap_err();
    assert_eq!(e.variable, "KAFKA_BOOTSTRAP_SERVERS");
    assert!(e.problem.contains("missing"), "{e}");
}

#[test]
fn tls_from_base64_pem_is_in_memory() {
    let c = load(&[
        ("KAFKA_CA_CERT", &b64(CERT)),
        ("KAFKA_CLIENT_CERT", &b64(CERT)),
        ("KAFKA_CLIENT_KEY", &b64(KEY)),
    ])
    .unwrap();
    let cc = c.consumer_config();
    assert_eq!(cc.get("security.protocol"), Some("ssl"));
    assert_eq!(cc.get("ssl.ca.pem"), Some(CERT));
    assert_eq!(cc.get("ssl.key.pem"), Some(KEY));
    assert!(cc.get("ssl.ca.location").is_none(), "never written to disk");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains("BEGIN"),
        "{shown}"
    );
}

#[test]
fn tls_errors_name_the_variable() {
    let e = error_for(&[("KAFKA_CA_CERT", "%%%not base64%%%")]);
    assert_eq!(e.variable, "KAFKA_CA_CERT");
    assert!(e.problem.contains("base64"), "{e}");

    let e = error_for(&[("KAFKA_CA_CERT", &b64("hello, not a certificate"))]);
    assert_eq!(e.variable, "KAFKA_CA_CERT");
    assert!(e.problem.contains("PEM"), "{e}");

    let e = error_for(&[("KAFKA_CA_CERT", &b64(KEY))]);
    assert_eq!(e.variable, "KAFKA_CA_CERT");
    assert!(e.problem.contains("CERTIFICATE"), "{e}");
    assert!(
        !e.to_string().contains("BEGIN"),
        "no key material in errors: {e}"
    );

    let e = error_for(&[
        ("KAFKA_CLIENT_KEY", &b64(CERT)),
        ("KAFKA_CLIENT_CERT", &b64(CERT)),
    ]);
    assert_eq!(e.variable, "KAFKA_CLIENT_KEY");
    assert!(e.problem.contains("PRIVATE KEY"), "{e}");

    let e = error_for(&[("KAFKA_CLIENT_CERT", &b64(CERT))]);
    assert_eq!(e.variable, "KAFKA_CLIENT_KEY");
    assert!(e.problem.contains("missing"), "{e}");
}

#[test]
fn tls_from_pem_files_as_a_mounted_secret_gives_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.crt", CERT),
        write("tls.crt", CERT),
        write("tls.key", KEY),
    );
    let c = load(&[
        ("KAFKA_CA_CERT_FILE", &ca),
        ("KAFKA_CLIENT_CERT_FILE", &cert),
        ("KAFKA_CLIENT_KEY_FILE", &key),
    ])
    .unwrap();
    let cc = c.consumer_config();
    assert_eq!(cc.get("ssl.ca.pem"), Some(CERT));
    assert_eq!(cc.get("ssl.certificate.pem"), Some(CERT));
    assert_eq!(cc.get("ssl.key.pem"), Some(KEY));

    // Both forms of one certificate: which one was meant is unclear.
    let e = error_for(&[("KAFKA_CA_CERT", &b64(CERT)), ("KAFKA_CA_CERT_FILE", &ca)]);
    assert_eq!(e.variable, "KAFKA_CA_CERT");
    assert!(e.problem.contains("not both"), "{e}");
    // A file that is not there, or not what its variable says.
    let missing = dir.path().join("nope.crt").display().to_string();
    let e = error_for(&[("KAFKA_CA_CERT_FILE", &missing)]);
    assert_eq!(e.variable, "KAFKA_CA_CERT_FILE");
    assert!(e.problem.contains("nope.crt"), "{e}");
    let e = error_for(&[("KAFKA_CA_CERT_FILE", &key)]);
    assert_eq!(e.variable, "KAFKA_CA_CERT_FILE");
    assert!(
        e.problem.contains("CERTIFICATE") && !e.to_string().contains("BEGIN"),
        "{e}"
    );
    // A client certificate from a file still needs its key.
    let e = error_for(&[("KAFKA_CLIENT_CERT_FILE", &cert)]);
    assert_eq!(e.variable, "KAFKA_CLIENT_KEY");
}

#[test]
fn unknown_librdkafka_property_is_named() {
    let e = error_for(&[("KAFKA_PROPERTY_NO_SUCH_THING", "1")]);
    assert_eq!(e.variable, "KAFKA_PROPERTY_NO_SUCH_THING");
    assert!(e.problem.contains("no.such.thing"), "{e}");
}

#[test]
fn bad_librdkafka_value_is_named_without_echoing_it() {
    let e = error_for(&[("KAFKA_SESSION_TIMEOUT_MS", "soon")]);
    assert_eq!(e.variable, "KAFKA_SESSION_TIMEOUT_MS");
    assert!(!e.problem.contains("soon"), "values are not echoed: {e}");
}

#[test]
fn runtime_owned_properties_cannot_be_overridden() {
    let e = error_for(&[("KAFKA_PROPERTY_ENABLE_AUTO_COMMIT", "true")]);
    assert_eq!(e.variable, "KAFKA_PROPERTY_ENABLE_AUTO_COMMIT");
}

#[test]
fn aliases_cannot_bypass_runtime_owned_properties() {
    let e = error_for(&[("KAFKA_PROPERTY_METADATA_BROKER_LIST", "10.0.0.1:9092")]);
    assert_eq!(e.variable, "KAFKA_PROPERTY_METADATA_BROKER_LIST");
    assert!(e.problem.contains("bootstrap.servers"), "{e}");
    let e = error_for(&[("KAFKA_PROPERTY_AUTO_COMMIT_ENABLE", "true")]);
    assert!(e.problem.contains("enable.auto.commit"), "{e}");
}

#[test]
fn producer_settings_that_weaken_acknowledgements_are_refused() {
    for (variable, value) in [
        ("KAFKA_PROPERTY_ACKS", "1"),
        ("KAFKA_PROPERTY_REQUEST_REQUIRED_ACKS", "0"),
        ("KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "false"),
    ] {
        let e = error_for(&[(variable, value)]);
        assert_eq!(e.variable, variable);
        assert!(e.problem.contains(WEAK_DELIVERY_VARIABLE), "{e}");
    }
    for ok in ["all", "-1"] {
        assert!(load(&[("KAFKA_PROPERTY_ACKS", ok)]).is_ok(), "acks={ok}");
    }
    let c = load(&[
        ("KAFKA_PROPERTY_REQUEST_REQUIRED_ACKS", "1"),
        (WEAK_DELIVERY_VARIABLE, "true"),
    ])
    .unwrap();
    assert_eq!(
        c.properties["acks"].expose(),
        "1",
        "read under its real name"
    );
    let e = error_for(&[(WEAK_DELIVERY_VARIABLE, "maybe")]);
    assert_eq!(e.variable, WEAK_DELIVERY_VARIABLE);
}

#[test]
fn the_next_generation_group_protocol_refuses_what_the_broker_owns() {
    let c = load(&[("KAFKA_GROUP_PROTOCOL", "consumer")]).unwrap();
    assert_eq!(c.properties["group.protocol"].expose(), "consumer");
    assert!(load(&[
        ("KAFKA_GROUP_PROTOCOL", "classic"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000")
    ])
    .is_ok());
    let e = error_for(&[
        ("KAFKA_GROUP_PROTOCOL", "consumer"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
    ]);
    assert_eq!(e.variable, "KAFKA_SESSION_TIMEOUT_MS");
    assert!(e.problem.contains("group.protocol=consumer"), "{e}");
    let e = error_for(&[
        ("KAFKA_PROPERTY_GROUP_PROTOCOL", "consumer"),
        ("KAFKA_PROPERTY_PARTITION_ASSIGNMENT_STRATEGY", "roundrobin"),
    ]);
    assert_eq!(e.variable, "KAFKA_PROPERTY_PARTITION_ASSIGNMENT_STRATEGY");
    let e = error_for(&[("KAFKA_GROUP_PROTOCOL", "next")]);
    assert_eq!(e.variable, "KAFKA_GROUP_PROTOCOL");
}

#[test]
fn the_memory_budget_sizes_prefetch_and_the_producer_queue() {
    let c = load(&[]).unwrap();
    assert_eq!(c.runtime.memory_bytes, Some(16 * 1024 * 1024));
    let eight = c.consumer_config_for(8);
    let many = c.consumer_config_for(64);
    assert_eq!(eight.get("queued.max.messages.kbytes"), Some("524"));
    assert_eq!(many.get("queued.max.messages.kbytes"), Some("65"));
    assert_eq!(
        c.producer_config().get("queue.buffering.max.kbytes"),
        Some("4096")
    );
    let c = load(&[("CLUSTERA_MEMORY_BYTES", "64MiB")]).unwrap();
    assert_eq!(c.runtime.memory_bytes, Some(64 << 20));
    let c = load(&[("CLUSTERA_MEMORY_BYTES", "off")]).unwrap();
    assert_eq!(c.runtime.memory_bytes, None);
    assert_eq!(
        c.consumer_config().get("queued.max.messages.kbytes"),
        Some("8192")
    );
    for bad in ["lots", "16XB", "1000"] {
        let e = error_for(&[("CLUSTERA_MEMORY_BYTES", bad)]);
        assert_eq!(e.variable, "CLUSTERA_MEMORY_BYTES", "{bad}");
    }
    // An explicit librdkafka property still wins over the budget.
    let c = load(&[("KAFKA_PROPERTY_QUEUED_MAX_MESSAGES_KBYTES", "2048")]).unwrap();
    assert_eq!(
        c.consumer_config_for(8).get("queued.max.messages.kbytes"),
        Some("2048")
    );
}

#[test]
fn max_message_bytes_follows_the_property() {
    assert_eq!(load(&[]).unwrap().max_message_bytes(), 1_000_000);
    let c = load(&[("KAFKA_MESSAGE_MAX_BYTES", "2000000")]).unwrap();
    assert_eq!(c.max_message_bytes(), 2_000_000);
}

#[test]
fn sasl_needs_credentials() {
    let e = error_for(&[
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_SASL_USERNAME", "u"),
    ]);
    assert_eq!(e.variable, "KAFKA_SASL_PASSWORD");
    let e = error_for(&[("KAFKA_SASL_MECHANISM", "KERBEROS")]);
    assert_eq!(e.variable, "KAFKA_SASL_MECHANISM");
    let c = load(&[
        ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
        ("KAFKA_SASL_USERNAME", "u"),
        ("KAFKA_SASL_PASSWORD", "p4ss"),
    ])
    .unwrap();
    assert_eq!(
        c.consumer_config().get("security.protocol"),
        Some("sasl_plaintext")
    );
    assert!(!format!("{c:?}").contains("p4ss"));
}

#[test]
fn numbers_and_topics_are_checked() {
    let e = error_for(&[("CLUSTERA_MAX_ATTEMPTS", "-1")]);
    assert_eq!(e.variable, "CLUSTERA_MAX_ATTEMPTS");
    let e = error_for(&[("CLUSTERA_COMMIT_EVERY", "0")]);
    assert_eq!(e.variable, "CLUSTERA_COMMIT_EVERY");
    let e = error_for(&[("CLUSTERA_HTTP_ADDR", "everywhere")]);
    assert_eq!(e.variable, "CLUSTERA_HTTP_ADDR");
    assert_eq!(
        load(&[("CLUSTERA_HTTP_ADDR", "off")])
            .unwrap()
            .runtime
            .http_addr,
        None
    );
    let e = error_for(&[("KAFKA_TOPIC", "bad topic!")]);
    assert_eq!(e.variable, "KAFKA_TOPIC");
    let e = error_for(&[("KAFKA_TOPIC", " , ")]);
    assert_eq!(e.variable, "KAFKA_TOPIC");
}
