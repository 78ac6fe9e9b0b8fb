//! The shipped Grafana dashboard names only metrics the node exports.

use std::collections::BTreeSet;

use crate::harness::*;

/// Every `sentrypeer_…` metric name in a text.
pub(crate) fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sentrypeer_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.insert(name);
    }
    out
}

/// Every metric the shipped dashboard names.
pub(crate) fn dashboard_metrics() -> BTreeSet<String> {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/sentrypeer.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = String::new();
    for panel in v["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    metric_names(&exprs)
}

#[test]
fn every_metric_the_grafana_dashboard_names_is_exported() {
    // The kernel sets' metrics need CAP_NET_ADMIN and a namespace of their own: checked by
    // `kernel_sets::the_grafana_dashboards_kernel_set_metrics_are_exported`.
    let wanted: BTreeSet<String> = dashboard_metrics()
        .into_iter()
        .filter(|m| !m.starts_with("sentrypeer_kernel_set_"))
        .collect();
    assert!(wanted.len() > 30, "{wanted:?}");
    // Every other optional part that has metrics, switched on (the BGP neighbour and the
    // WebHook endpoint are closed ports).
    let node = Node::start(&[
        "--agent-listen",
        "127.0.0.1:0",
        "-w",
        "http://127.0.0.1:9/unreachable",
        "--dnsbl-listen",
        "127.0.0.1:0",
        "--dnsbl-zone",
        "bl.example",
        "--bgp-neighbor",
        "127.0.0.1:9",
        "--bgp-local-as",
        "65000",
        "--bgp-peer-as",
        "65001",
        "--bgp-router-id",
        "192.0.2.1",
        "--bgp-next-hop",
        "192.0.2.1",
    ]);
    let r = node.get("/metrics");
    let exported = metric_names(&String::from_utf8(r.body).unwrap());
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names metrics the node does not export: {missing:?}"
    );
}
