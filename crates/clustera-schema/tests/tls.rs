//! The registry client over HTTPS with a private CA (`SCHEMA_REGISTRY_CA_CERT` or
//! `SCHEMA_REGISTRY_CA_LOCATION`), and refused without it. The certificates in
//! `tests/testdata` are a test CA and a server certificate for localhost and 127.0.0.1, valid
//! until 2126 (the same as clustera-send's TLS test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use base64::Engine;
use clustera_schema::testing::TestRegistry;
use clustera_schema::{RegistryClient, RegistryError, RegistrySettings, SchemaType};
use tokio::net::{TcpListener, TcpStream};
use tokio_native_tls::{native_tls, TlsAcceptor};

const CA: &[u8] = include_bytes!("testdata/ca.crt");

/// Terminates TLS on a loopback port and forwards each connection to the plain registry.
async fn https_front(registry: &TestRegistry) -> String {
    let identity = native_tls::Identity::from_pkcs8(
        include_bytes!("testdata/server.crt"),
        include_bytes!("testdata/server.key"),
    )
    .unwrap();
    let tls = TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", tcp.local_addr().unwrap().port());
    let backend = registry.url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let (tls, backend) = (tls.clone(), backend.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to forward.
                let Ok(mut front) = tls.accept(stream).await else {
                    return;
                };
                let mut back = TcpStream::connect(&backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
            });
        }
    });
    url
}

fn settings(pairs: &[(&str, &str)]) -> RegistrySettings {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    RegistrySettings::from_vars(&|k| map.get(k).cloned())
        .unwrap()
        .unwrap()
}

const SCHEMA: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registry_with_a_private_ca() {
    let registry = TestRegistry::start().unwrap();
    let url = https_front(&registry).await;

    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(CA);
    let inline = RegistryClient::new(settings(&[
        ("SCHEMA_REGISTRY_URL", &url),
        ("SCHEMA_REGISTRY_CA_CERT", &ca_b64),
    ]))
    .unwrap();
    let id = inline
        .register("t-value", SchemaType::Avro, SCHEMA)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, CA).unwrap();
    let from_file = RegistryClient::new(settings(&[
        ("SCHEMA_REGISTRY_URL", &url),
        ("SCHEMA_REGISTRY_CA_LOCATION", ca_file.to_str().unwrap()),
    ]))
    .unwrap();
    assert_eq!(from_file.schema_by_id(id).await.unwrap().schema, SCHEMA);

    // Without the CA the server's certificate is not trusted: unreachable, and retriable
    // (nothing about the message), with the reason.
    let untrusted = RegistryClient::new(settings(&[("SCHEMA_REGISTRY_URL", &url)])).unwrap();
    let err = untrusted.schema_by_id(id).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
