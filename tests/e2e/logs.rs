//! Logs carry no personal data. `rapport dev` runs with JSON logs at debug
//! level for every Rapport component; the test creates, resolves, updates and
//! records interactions for a customer whose name, e-mail address, phone
//! number and identifiers are distinctive canaries (including requests that
//! fail validation and echo the bad value back to the client), then reads
//! every log line: each is a JSON object, the gateway's access log has one
//! line per call with its final status and trace id, and no canary appears
//! anywhere.

mod support;

use serde_json::Value;
use support::{DevStack, grpcurl_ok, grpcurl_run};

const CANARIES: [&str; 6] = [
    "Zebulonia",
    "Quixwerth",
    "zebulonia.canary",
    "611 48 29 37",
    "611482937",
    "loyalty-canary-7731",
];

#[test]
fn logs_are_json_with_trace_ids_and_carry_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rapport.log");
    let stack = DevStack::start_logging_to(
        &dir.path().join("data"),
        &[],
        &[
            ("RAPPORT_LOG_FORMAT", "json"),
            (
                "RAPPORT_LOG",
                "info,rapport=debug,rapport_kit=debug,rapport_gateway=debug,rapport_profile=debug,\
                 rapport_interaction=debug,rapport_segmentation=debug,rapport_valuation=debug",
            ),
        ],
        Some(&log),
    );
    let key = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());
    let gateway = stack.addr(0);
    let call = |method: &str, body: &str| -> Value {
        let out = grpcurl_ok(&["-H", &auth, "-d", body, &gateway, method]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
    };

    let created = call(
        "rapport.profile.v1.ProfileService/CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON",
            "person": {"given_name": "Zebulonia", "family_name": "Quixwerth"},
            "emails": [{"address": "zebulonia.canary@example.com"}],
            "phones": [{"number": "611 48 29 37"}], "country_code": "ES",
            "external_identifiers": [{"kind": "IDENTIFIER_KIND_EXTERNAL", "system": "loyalty",
                                      "value": "loyalty-canary-7731"}]}}"#,
    );
    let id = created["customer"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        "rapport.profile.v1.ProfileService/ResolveIdentity",
        r#"{"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "zebulonia.canary@example.com"},
                            {"kind": "IDENTIFIER_KIND_PHONE", "value": "+34 611 48 29 37"}]}"#,
    );
    call(
        "rapport.profile.v1.ProfileService/SearchCustomers",
        r#"{"query": "Zebulonia"}"#,
    );
    call(
        "rapport.interaction.v1.InteractionService/RecordInteraction",
        r#"{"interaction": {"customer": {"identifiers": {"identifiers": [
                {"kind": "IDENTIFIER_KIND_EMAIL", "value": "zebulonia.canary@example.com"}]}},
            "type": "INTERACTION_TYPE_PURCHASE", "occur_time": "2026-01-05T10:00:00Z",
            "amount": {"currency_code": "EUR", "units": 40},
            "idempotency_key": "order-1"}}"#,
    );
    // Requests refused for bad input echo the value to the caller only.
    for (method, body) in [
        (
            "rapport.profile.v1.ProfileService/CreateCustomer",
            r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "display_name": "Zebulonia Quixwerth",
                "emails": [{"address": "zebulonia.canary@"}]}}"#,
        ),
        (
            "rapport.profile.v1.ProfileService/ResolveIdentity",
            r#"{"identifiers": [{"kind": "IDENTIFIER_KIND_PHONE", "value": "611 48 29 37 Quixwerth"}]}"#,
        ),
    ] {
        let out = grpcurl_run(&["-H", &auth, "-d", body, &gateway, method]);
        assert!(!out.status.success(), "{method} accepted bad input");
    }
    let read = grpcurl_run(&[
        "-H",
        &auth,
        "-d",
        &format!(r#"{{"customer_id": "{id}"}}"#),
        &gateway,
        "rapport.profile.v1.ProfileService/GetCustomer",
    ]);
    assert!(read.status.success());

    stack.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 10, "too few log lines to judge: {text}");
    let mut statuses = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        // The gateway's access log: one line per call, with its final gRPC
        // status code and its trace id.
        if v["target"] == "rapport::access" {
            let trace = v["trace_id"].as_str().unwrap_or_default();
            assert_eq!(trace.len(), 32, "access line without a trace id: {line}");
            assert!(v["duration_ms"].is_number(), "{line}");
            // The status is the code's number, and `code` its canonical name.
            let status = v["status"]
                .as_i64()
                .unwrap_or_else(|| panic!("the status is not a number: {line}"));
            statuses.push((
                v["method"].as_str().unwrap_or_default().to_string(),
                format!("{status} {}", v["code"].as_str().unwrap_or_default()),
            ));
        }
        for canary in CANARIES {
            assert!(
                !line.to_lowercase().contains(&canary.to_lowercase()),
                "personal data {canary:?} in the log: {line}"
            );
        }
    }
    let status_of = |method: &str| -> Vec<&str> {
        statuses
            .iter()
            .filter(|(m, _)| m.ends_with(method))
            .map(|(_, s)| s.as_str())
            .collect()
    };
    let (ok, invalid) = ("0 OK", "3 INVALID_ARGUMENT");
    assert_eq!(status_of("/CreateCustomer"), [ok, invalid], "{statuses:?}");
    assert_eq!(status_of("/ResolveIdentity"), [ok, invalid], "{statuses:?}");
    assert_eq!(status_of("/RecordInteraction"), [ok], "{statuses:?}");
    assert_eq!(status_of("/GetCustomer"), [ok], "{statuses:?}");
}
