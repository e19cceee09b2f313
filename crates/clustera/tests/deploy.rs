//! The deployment files: no container engine or cluster runs here, so this checks what can be
//! checked without one: every file parses, and probes, ports and variables match the runtime.
//! (That the dashboard queries exported metrics is a unit test of `telemetry::metrics`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn yaml_documents(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn kubernetes_manifests_probe_the_runtime_endpoints() {
    let docs = yaml_documents("kubernetes/deployment.yaml");
    let container = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    let env: BTreeSet<String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    for var in [
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CA_CERT",
        "KAFKA_CLIENT_CERT",
        "KAFKA_CLIENT_KEY",
    ] {
        assert!(env.contains(var), "{var} missing from the Deployment");
    }
    // Every variable the Deployment sets is one the runtime or the example reads.
    let known = ["OUTPUT_TOPIC", "RUST_LOG"];
    for var in &env {
        assert!(
            var.starts_with("KAFKA_")
                || var.starts_with("CLUSTERA_")
                || known.contains(&var.as_str()),
            "{var}"
        );
    }
    for file in [
        "kubernetes/secret.example.yaml",
        "kubernetes/service.yaml",
        "compose.yaml",
    ] {
        assert!(!yaml_documents(file).is_empty(), "{file}");
    }
    let keda = yaml_documents("keda/scaledobject.yaml");
    assert_eq!(keda[0]["kind"], "ScaledObject");
    assert_eq!(
        keda[0]["spec"]["scaleTargetRef"]["name"],
        docs[0]["metadata"]["name"]
    );
    assert_eq!(keda[1]["kind"], "TriggerAuthentication");
}
