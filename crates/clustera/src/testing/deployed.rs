//! The metrics the deployment files query (Grafana's dashboard and the Prometheus alert
//! rules), so that each crate's tests check that the names it exports are the ones queried.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| format!("<{}: {e}>", file.display()))
}

/// Where a deployed query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuerySource {
    /// A panel of `deploy/grafana/dashboard.json`.
    Dashboard,
    /// An alert rule of `deploy/kubernetes/monitoring.yaml`.
    Alert,
}

/// Every PromQL expression of the dashboard's panels and of the alert rules, with where it
/// is.
pub fn deployed_queries() -> Vec<(QuerySource, String)> {
    let mut out = Vec::new();
    if let Ok(dashboard) =
        serde_json::from_str::<serde_json::Value>(&deploy_file("grafana/dashboard.json"))
    {
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((QuerySource::Dashboard, expr.to_owned()));
                }
            }
        }
    }
    // One `expr:` per rule, on one line: no YAML parser needed for that.
    for line in deploy_file("kubernetes/monitoring.yaml").lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            out.push((QuerySource::Alert, expr.to_owned()));
        }
    }
    out
}

/// The metric names in `expr` that start with `prefix`, as families (without `_bucket`,
/// `_sum`, `_count`, `_total`).
pub fn queried_families(expr: &str, prefix: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with(prefix))
        .map(|name| {
            ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The metric families of a Prometheus/OpenMetrics text exposition (its `# TYPE` lines).
pub fn exposed_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Asserts that every metric with `prefix` that the deployment files query is in
/// `exposition`, and returns how many references were checked.
pub fn assert_deployed_metrics_exported(prefix: &str, exposition: &str) -> usize {
    let families = exposed_families(exposition);
    let mut checked = 0;
    for (_, expr) in deployed_queries() {
        for family in queried_families(&expr, prefix) {
            assert!(
                families.contains(&family),
                "{family} (in {expr}) is not exported: {families:?}"
            );
            checked += 1;
        }
    }
    checked
}
