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

fn yaml_documents(path: &str) -> Vec<serde_norway::Value> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_norway::Deserializer::from_str(&text)
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
        "KAFKA_CA_CERT_FILE",
        "KAFKA_CLIENT_CERT_FILE",
        "KAFKA_CLIENT_KEY_FILE",
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

fn env_names(container: &serde_norway::Value) -> BTreeSet<String> {
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

/// The three Deployments: the transform kernel, the portal, the relay.
const DEPLOYMENTS: [&str; 3] = [
    "kubernetes/deployment.yaml",
    "kubernetes/kafkasend-portal.yaml",
    "kubernetes/outbox-relay.yaml",
];

#[test]
fn deployments_are_restricted_pinned_and_mount_certificates_as_files() {
    let secret = &yaml_documents("kubernetes/secret.example.yaml")[0];
    for file in DEPLOYMENTS {
        let deployment = &yaml_documents(file)[0];
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{file}"
        );
        let container = &pod["containers"][0];
        let sc = &container["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{file}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{file}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{file}");
        let image = container["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "{file}: image {image} is not pinned"
        );

        // Each *_FILE variable names a file of the mounted certificate Secret.
        let mounts: Vec<(String, String)> = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["mountPath"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let volumes = pod["volumes"].as_sequence().unwrap();
        for var in container["env"].as_sequence().unwrap() {
            let name = var["name"].as_str().unwrap();
            if !name.ends_with("_FILE") {
                continue;
            }
            let path = var["value"].as_str().unwrap();
            let (volume, dir) = mounts
                .iter()
                .find(|(_, dir)| path.starts_with(&format!("{dir}/")))
                .unwrap_or_else(|| panic!("{file}: {name}={path} is under no mount"));
            let source = volumes
                .iter()
                .find(|v| v["name"].as_str() == Some(volume))
                .unwrap_or_else(|| panic!("{file}: no volume {volume}"));
            assert_eq!(
                source["secret"]["secretName"], secret["metadata"]["name"],
                "{file}: {name}"
            );
            let key = &path[dir.len() + 1..];
            assert!(
                secret["stringData"][key]
                    .as_str()
                    .is_some_and(|pem| pem.contains("-----BEGIN")),
                "{file}: {name} reads {key}, which the Secret does not hold as PEM"
            );
        }
    }
}

#[test]
fn disruption_budgets_and_monitors_select_the_deployments() {
    let labels = |file: &str| {
        let d = &yaml_documents(file)[0];
        let app = d["spec"]["template"]["metadata"]["labels"]["app"]
            .as_str()
            .unwrap()
            .to_owned();
        let ports: Vec<String> = d["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        (app, d["spec"]["replicas"].as_u64().unwrap(), ports)
    };
    let budgets = yaml_documents("kubernetes/disruption.yaml");
    let monitoring = yaml_documents("kubernetes/monitoring.yaml");
    let monitor = monitoring
        .iter()
        .find(|d| d["kind"] == "PodMonitor")
        .unwrap();
    let monitored: Vec<&str> = monitor["spec"]["selector"]["matchExpressions"][0]["values"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .unwrap();
    for file in DEPLOYMENTS {
        let (app, replicas, ports) = labels(file);
        assert!(monitored.contains(&app.as_str()), "{app} is not scraped");
        assert!(ports.iter().any(|p| p == port), "{app} has no port {port}");
        let budget = budgets
            .iter()
            .find(|b| b["spec"]["selector"]["matchLabels"]["app"].as_str() == Some(&app));
        // A single-instance Deployment with a budget could never be drained.
        assert_eq!(budget.is_some(), replicas > 1, "{app}: {replicas} replicas");
    }
    let rules = monitoring
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .unwrap();
    let alerts: Vec<&str> = rules["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for expected in [
        "ClusteraConsumerLagGrowing",
        "ClusteraPartitionStalled",
        "ClusteraDeadLetters",
        "ClusteraRelayWalRetained",
    ] {
        assert!(alerts.contains(&expected), "{expected} in {alerts:?}");
    }
}

#[test]
fn the_compose_broker_is_reachable_from_the_host_and_the_build_context_is_small() {
    let compose = &yaml_documents("compose.yaml")[0];
    let kafka = &compose["services"]["kafka"];
    let advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap();
    let published: Vec<&str> = kafka["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let host = advertised
        .split(',')
        .find_map(|l| l.split_once("://localhost:").map(|(_, port)| port))
        .expect("a listener advertised to the host");
    assert!(
        published.contains(&format!("{host}:{host}").as_str()),
        "port {host} is not published: {published:?}"
    );
    let ignore = std::fs::read_to_string(deploy("../.dockerignore")).unwrap();
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            "{entry} in .dockerignore"
        );
    }
}
