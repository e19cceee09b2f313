//! Connecting as a production relay would. TLS to PostgreSQL: a throwaway server with
//! `ssl=on` and a certificate from a test CA made here. With `sslmode=verify-full` and the CA
//! as `sslrootcert`, the relay's SQL session and its walsender session both run over TLS and
//! events flow; without the CA the connection is refused. Passwords: SCRAM-SHA-256 and MD5
//! roles. Heartbeats, when configured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clustera::testing::MockBroker;
use clustera_outbox::pg::Target;
use clustera_outbox::relay::{init, Relay, RelayConfig};
use clustera_outbox::testing::Postgres;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn certificate(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    serial: u32,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            let san = SubjectAlternativeName::new()
                .dns("localhost")
                .ip("127.0.0.1")
                .build(&b.x509v3_context(Some(ca), None))
                .unwrap();
            b.append_extension(san).unwrap();
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_ca_is_trusted_and_refused_without_it() {
    let (ca_key, server_key) = (key(), key());
    let ca = certificate("clustera test CA", &ca_key, None, 1);
    let server = certificate("localhost", &server_key, Some((&ca, &ca_key)), 2);
    let pg = Postgres::start_with(
        &[
            ("server.crt", &server.to_pem().unwrap()),
            (
                "server.key",
                &server_key.private_key_to_pem_pkcs8().unwrap(),
            ),
        ],
        &[("ssl", "on")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.to_pem().unwrap()).unwrap();
    let trusted = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca_file.display()
    );

    // Without the CA: refused, by the SQL client and by the relay.
    let untrusted = format!("{}?sslmode=verify-full", pg.url());
    let e = Target::parse(&untrusted)
        .unwrap()
        .connect()
        .await
        .expect_err("a certificate from an unknown CA is refused");
    assert!(
        format!("{e:?}").contains("certificate verify failed"),
        "{e:?}"
    );
    let kafka = clustera::Config::for_brokers("relay-tls", "127.0.0.1:1", &[]);
    assert!(Relay::connect(&untrusted, &kafka, RelayConfig::default())
        .await
        .is_err());

    // With it: TLS, for SQL and for the walsender session.
    let client = Target::parse(&trusted).unwrap().connect().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the SQL session is encrypted");
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 1)
        .unwrap();
    let kafka = clustera::Config::for_brokers("relay-tls", broker.bootstrap(), &[]);
    let relay = Relay::connect(&trusted, &kafka, RelayConfig::default())
        .await
        .unwrap();
    let relayed = relay.relayed();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run_until(async {
        let _ = rx.await;
    }));
    client
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
             SELECT gen_random_uuid(), 'User', 'UserCreated', '{}' FROM generate_series(1, 10)",
            &[],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while relayed.load(Ordering::Relaxed) < 10 {
        assert!(Instant::now() < deadline, "relayed over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let walsender_ssl: bool = client
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_replication r ON r.pid = s.pid",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(walsender_ssl, "the walsender session is encrypted");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// The relay as a role of its own that logs in with a password: SCRAM-SHA-256 for one role,
/// MD5 for another, for the SQL session and the walsender session alike; a wrong password
/// is refused with the server's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_logs_in_with_scram_or_md5_passwords() {
    let hba = "local all all trust\n\
               host all postgres 127.0.0.1/32 trust\n\
               host all scram_relay 127.0.0.1/32 scram-sha-256\n\
               host all md5_relay 127.0.0.1/32 md5\n";
    let pg = Postgres::start_with(&[("pg_hba.conf", hba.as_bytes())], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = Target::parse(pg.url()).unwrap().connect().await.unwrap();
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_relay LOGIN REPLICATION PASSWORD 'scram secret';
             SET password_encryption = 'md5';
             CREATE ROLE md5_relay LOGIN REPLICATION PASSWORD 'md5 secret';",
        )
        .await
        .unwrap();
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 1)
        .unwrap();
    let kafka = clustera::Config::for_brokers("relay-auth", broker.bootstrap(), &[]);
    let port = pg.port();

    let wrong = format!("postgres://scram_relay:nope@127.0.0.1:{port}/postgres");
    let e = Relay::connect(&wrong, &kafka, RelayConfig::default())
        .await
        .err()
        .expect("a wrong password is refused");
    // As the CLI prints it: the error and its causes.
    let message = clustera::infra::error_chain(&e);
    assert!(
        message.contains("password authentication failed for user \"scram_relay\""),
        "{message}"
    );

    let mut expected = 0;
    for (user, password) in [
        ("scram_relay", "scram%20secret"),
        ("md5_relay", "md5%20secret"),
    ] {
        let url = format!("postgres://{user}:{password}@127.0.0.1:{port}/postgres");
        let relay = Relay::connect(&url, &kafka, RelayConfig::default())
            .await
            .unwrap();
        let relayed = relay.relayed();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(relay.run_until(async {
            let _ = rx.await;
        }));
        admin
            .execute(
                "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                 SELECT gen_random_uuid(), 'User', 'UserCreated', '{}' FROM generate_series(1, 5)",
                &[],
            )
            .await
            .unwrap();
        expected += 5;
        let deadline = Instant::now() + Duration::from_secs(30);
        while relayed.load(Ordering::Relaxed) < 5 {
            assert!(
                !task.is_finished(),
                "{user}'s relay stopped: {:?}",
                task.await
            );
            assert!(Instant::now() < deadline, "{user} relayed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let streaming_as: String = admin
            .query_one("SELECT usename::text FROM pg_stat_replication", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(streaming_as, user);
        let _ = tx.send(());
        task.await.unwrap().unwrap();
    }
    assert_eq!(expected, 10);
}

/// With `heartbeat` set, the relay writes `pg_logical_emit_message` heartbeats, seen here
/// through a second slot decoded by test_decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_written_when_configured() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = Target::parse(pg.url()).unwrap().connect().await.unwrap();
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    client
        .execute(
            "SELECT pg_create_logical_replication_slot('watcher', 'test_decoding')",
            &[],
        )
        .await
        .unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 1)
        .unwrap();
    let kafka = clustera::Config::for_brokers("relay-heartbeat", broker.bootstrap(), &[]);
    let config = RelayConfig {
        heartbeat: Some(Duration::from_millis(100)),
        ..RelayConfig::default()
    };
    let relay = Relay::connect(pg.url(), &kafka, config).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run_until(async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_peek_changes('watcher', NULL, NULL)
                 WHERE data LIKE 'message:%prefix: clustera.heartbeat%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} heartbeats");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
