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

fn env_names(container: &serde_yaml::Value) -> BTreeSet<String> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_portal_and_the_relay_have_manifests_that_match_their_commands() {
    let portal = &yaml_documents("kubernetes/kafkasend-portal.yaml")[0];
    let container = &portal["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][1], "portal");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env = env_names(container);
    for var in [
        "KAFKA_BOOTSTRAP_SERVERS",
        "PORTAL_API_BASE_URL",
        "PORTAL_ALLOWED_ENDPOINTS",
    ] {
        assert!(env.contains(var), "{var} missing from the portal");
    }
    for var in &env {
        assert!(
            ["KAFKA_", "PORTAL_", "OAUTH2_", "CLUSTERA_", "RUST_LOG"]
                .iter()
                .any(|p| var.starts_with(p)),
            "{var} is not a portal setting"
        );
    }

    let relay = &yaml_documents("kubernetes/outbox-relay.yaml")[0];
    assert_eq!(
        relay["spec"]["replicas"], 1,
        "one relay per replication slot"
    );
    assert_eq!(relay["spec"]["strategy"]["type"], "Recreate");
    let container = &relay["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][1], "outbox");
    assert_eq!(container["command"][2], "relay");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env = env_names(container);
    assert!(env.contains("DATABASE_URL") && env.contains("KAFKA_BOOTSTRAP_SERVERS"));
}
