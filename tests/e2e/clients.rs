//! Generated clients: `buf generate` with the repository's buf.gen.yaml and
//! locally installed plugins writes a Python client (grpcio-tools) and a
//! TypeScript one (protoc-gen-es); each runs its scenario in
//! `examples/clients/` against a dev stack (Python over gRPC with grpcio,
//! TypeScript over Connect with `@connectrpc/connect-node`), and every field
//! each read is checked here.

mod support;

use std::process::Command;

use serde_json::Value;
use support::DevStack;

/// What a scenario printed, after checking that it ran.
fn scenario(command: &mut Command, what: &str) -> Value {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run the {what} scenario: {e}"));
    assert!(
        out.status.success(),
        "the {what} scenario failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the scenario prints JSON")
}

/// The checks both scenarios share: the customer created and read back, the
/// purchase to the cent, the purchase history streamed, the field violation.
fn check(got: &Value, tag: &str, value: (&str, i64)) {
    let customer = &got["created"]["customer"];
    let id = customer["customerId"].as_str().expect("an id");
    assert_eq!(customer["kind"], "CUSTOMER_KIND_PERSON", "{tag}");
    assert_eq!(customer["displayName"], "Ada Byron", "{tag}");
    assert_eq!(customer["person"]["givenName"], "Ada", "{tag}");
    assert_eq!(
        customer["emails"][0]["address"],
        format!("ada.{tag}@example.com"),
        "{tag}"
    );
    assert_eq!(&got["read"]["customer"], customer, "{tag}: read back");

    let recorded = &got["recorded"]["interaction"];
    assert_eq!(got["recorded"]["created"], true, "{tag}");
    assert_eq!(recorded["customerId"], id, "{tag}");
    assert_eq!(recorded["type"], "INTERACTION_TYPE_PURCHASE", "{tag}");
    assert_eq!(recorded["occurTime"], "2025-03-02T10:00:00Z", "{tag}");
    assert_eq!(recorded["amount"]["currencyCode"], "EUR", "{tag}");
    assert_eq!(recorded["amount"]["units"], "40", "{tag}");
    assert_eq!(recorded["amount"]["nanos"], 500_000_000, "{tag}");

    let summaries: Vec<&Value> = got["exported"]
        .as_array()
        .expect("pages")
        .iter()
        .flat_map(|p| p["summaries"].as_array().expect("summaries").iter())
        .collect();
    assert_eq!(summaries.len(), 1, "{tag}: {summaries:?}");
    assert_eq!(summaries[0]["customerId"], id, "{tag}");
    assert_eq!(summaries[0]["historicalValue"]["units"], value.0, "{tag}");
    assert_eq!(summaries[0]["historicalValue"]["nanos"], value.1, "{tag}");

    let violations = &got["error"]["fieldViolations"];
    assert_eq!(violations[0]["field"], "customer_id", "{tag}: {violations}");
    assert_eq!(violations[0]["description"], "must be a UUID", "{tag}");
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("customer_id")),
        "{tag}"
    );
}

#[test]
fn generated_python_and_typescript_clients_run_their_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = support::workspace();
    let tools = workspace.join(".tools");
    let generated = dir.path().join("gen");
    let path = format!(
        "{}:{}",
        tools.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let built = Command::new(support::buf())
        .current_dir(&workspace)
        .args(["generate", "-o"])
        .arg(&generated)
        .env("PATH", &path)
        .env("PYTHONPATH", tools.join("python"))
        .output()
        .expect("run buf generate (scripts/bootstrap.sh clients installs the plugins)");
    assert!(
        built.status.success(),
        "buf generate: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    for file in [
        "python/rapport/profile/v1/profile_service_pb2.py",
        "python/rapport/profile/v1/profile_service_pb2.pyi",
        "python/rapport/profile/v1/profile_service_pb2_grpc.py",
        "typescript/rapport/profile/v1/profile_service_pb.js",
        "typescript/rapport/profile/v1/profile_service_pb.d.ts",
    ] {
        assert!(generated.join(file).is_file(), "{file} was not generated");
    }

    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let gw = stack.addr(0);
    let key = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let key = key.trim();
    let examples = workspace.join("examples/clients");

    let python = scenario(
        Command::new("python3")
            .arg(examples.join("scenario.py"))
            .args([gw.as_str(), key, "python"])
            .env(
                "PYTHONPATH",
                format!(
                    "{}:{}",
                    generated.join("python").display(),
                    tools.join("python").display()
                ),
            ),
        "Python",
    );
    check(&python, "python", ("40", 500_000_000));
    assert!(python.get("streamed").is_none());

    let typescript = scenario(
        Command::new("node")
            .arg(examples.join("scenario.cjs"))
            .arg(format!("http://{gw}"))
            .arg(key)
            .arg(generated.join("typescript"))
            .arg("typescript")
            .env("NODE_PATH", support::node_modules()),
        "TypeScript",
    );
    // Its client stream added EUR 12.25 once (the second message repeated it).
    check(&typescript, "typescript", ("52", 750_000_000));
    assert_eq!(typescript["streamed"]["acceptedCount"], "1");
    assert_eq!(typescript["streamed"]["duplicateCount"], "1");
    assert_eq!(typescript["error"]["code"], "InvalidArgument");
    assert_eq!(python["error"]["code"], "INVALID_ARGUMENT");
    stack.stop();
}
