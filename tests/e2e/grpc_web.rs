//! Clients without a gRPC stack, with real client libraries on Node:
//! ConnectRPC's gRPC-Web transport (`@connectrpc/connect-web`, as a browser
//! uses it) in binary and in text mode (`application/grpc-web-text`), and its
//! Connect transport (`@connectrpc/connect-node`, HTTP/1.1) in JSON and in
//! binary. Each calls the gateway of a dev stack with unary calls, a server
//! stream, a client stream (Connect only) and an error, and every field it
//! reads is checked here.

mod support;

use serde_json::Value;
use support::DevStack;

/// Runs the client script in `mode` against the gateway and returns what it read.
fn run_client(gw: &str, key: &str, image: &std::path::Path, mode: &str) -> Value {
    let out = std::process::Command::new("node")
        .arg(support::workspace().join("tests/e2e/grpc_web_client.cjs"))
        .arg(format!("http://{gw}"))
        .arg(key)
        .arg(image)
        .arg(mode)
        .env("NODE_PATH", support::node_modules())
        .output()
        .expect("run node (scripts/bootstrap.sh grpcweb installs the client)");
    assert!(
        out.status.success(),
        "the {mode} gRPC-Web client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[test]
fn grpc_web_and_connect_client_libraries_work_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let gw = stack.addr(0);
    let key = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    // The client reads the service descriptors at run time, from the contracts.
    let image = dir.path().join("image.binpb");
    let built = std::process::Command::new(support::buf())
        .current_dir(support::workspace())
        .args(["build", "-o"])
        .arg(&image)
        .output()
        .expect("run buf build");
    assert!(built.status.success(), "{built:?}");

    let mut exported_ids = Vec::new();
    for mode in ["binary", "text", "connect-json", "connect-proto"] {
        let connect = mode.starts_with("connect-");
        let got = run_client(&gw, key.trim(), &image, mode);
        let created = &got["created"]["customer"];
        let id = created["customerId"].as_str().expect("an id").to_string();
        assert_eq!(created["kind"], "CUSTOMER_KIND_PERSON", "{mode}");
        assert_eq!(created["displayName"], "Wen Bo", "{mode}");
        assert_eq!(created["person"]["givenName"], "Wen", "{mode}");
        assert_eq!(created["person"]["familyName"], "Bo", "{mode}");
        assert_eq!(
            created["emails"][0]["address"],
            format!("web.{mode}@example.com"),
            "{mode}"
        );
        assert_eq!(&got["read"]["customer"], created, "{mode}: read back");

        let recorded = &got["recorded"]["interaction"];
        assert_eq!(got["recorded"]["created"], true, "{mode}");
        assert_eq!(recorded["customerId"], id.as_str(), "{mode}");
        assert_eq!(recorded["type"], "INTERACTION_TYPE_PURCHASE", "{mode}");
        assert_eq!(recorded["occurTime"], "2025-03-02T10:00:00Z", "{mode}");
        assert_eq!(
            recorded["idempotencyKey"],
            format!("web:{mode}:1"),
            "{mode}"
        );
        let amount = &recorded["amount"];
        assert_eq!(
            (&amount["currencyCode"], &amount["units"], &amount["nanos"]),
            (
                &Value::from("EUR"),
                &Value::from("40"),
                &Value::from(500_000_000)
            ),
            "{mode}"
        );

        // The server stream: every customer with a purchase so far.
        let summaries: Vec<Value> = got["exported"]
            .as_array()
            .expect("pages")
            .iter()
            .flat_map(|p| p["summaries"].as_array().cloned().unwrap_or_default())
            .collect();
        exported_ids.push(id.clone());
        let mut ids: Vec<&str> = summaries
            .iter()
            .map(|s| s["customerId"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut expected: Vec<&str> = exported_ids.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected, "{mode}: exported customers");
        let own = summaries
            .iter()
            .find(|s| s["customerId"] == id.as_str())
            .unwrap();
        assert_eq!(own["currencyCode"], "EUR", "{mode}");
        assert_eq!(own["firstPurchaseTime"], "2025-03-02T10:00:00Z", "{mode}");
        // Over Connect the client stream added EUR 12.25 once (its second
        // message repeated the first).
        let (units, nanos) = if connect {
            ("52", 750_000_000)
        } else {
            ("40", 500_000_000)
        };
        assert_eq!(own["historicalValue"]["units"], units, "{mode}");
        assert_eq!(own["historicalValue"]["nanos"], nanos, "{mode}");
        if connect {
            assert_eq!(got["streamed"]["acceptedCount"], "1", "{mode}");
            assert_eq!(got["streamed"]["duplicateCount"], "1", "{mode}");
        } else {
            assert!(got["streamed"].is_null(), "{mode}");
        }

        // An error arrives with its code and message.
        assert_eq!(got["error"]["code"], "InvalidArgument", "{mode}");
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("customer_id")),
            "{mode}: {}",
            got["error"]
        );
        // Its field violation, decoded for reading where Connect carries it.
        assert_eq!(
            got["error"]["details"][0]["type"], "google.rpc.BadRequest",
            "{mode}"
        );
        let debug = &got["error"]["details"][0]["debug"];
        if connect {
            assert_eq!(
                debug["fieldViolations"][0]["field"], "customer_id",
                "{mode}: {debug}"
            );
        } else {
            assert!(debug.is_null(), "{mode}: {debug}");
        }
    }
    stack.stop();
}
