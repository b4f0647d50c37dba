//! HTTP/JSON at the gateway: the Connect protocol on the gRPC port, driven by
//! a plain HTTP/1.1 client (what `curl -H 'Content-Type: application/json'`
//! sends) and by the real `buf curl --protocol connect`. Every call goes
//! through the same keys, scopes and tenancy as gRPC, errors come back as
//! Connect's JSON with their details decoded, and a server stream arrives
//! enveloped with its end-of-stream message. (The ConnectRPC client library
//! is driven in `grpc_web.rs`.)

mod support;

use serde_json::Value;
use support::{DevStack, HttpAnswer, http_post};

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A unary JSON call with `key`.
fn call(gw: &str, key: &str, method: &str, body: &str) -> HttpAnswer {
    let auth = format!("Bearer {key}");
    http_post(
        gw,
        &format!("/{method}"),
        &[JSON, ("Authorization", &auth)],
        body.as_bytes(),
    )
}

/// A unary JSON call that must succeed; its answer.
fn ok(gw: &str, key: &str, method: &str, body: &str) -> Value {
    let answer = call(gw, key, method, body);
    assert_eq!(
        answer.status,
        200,
        "{method}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

/// A Connect error answer: its HTTP status and JSON.
fn error(answer: HttpAnswer) -> (u16, Value) {
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let status = answer.status;
    (status, answer.json())
}

/// The messages of a Connect stream body, and its end-of-stream message.
fn envelopes(mut body: &[u8]) -> (Vec<Value>, Value) {
    let mut messages = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let message: Value = serde_json::from_slice(&body[5..5 + len]).expect("a JSON message");
        if body[0] == 2 {
            assert_eq!(body.len(), 5 + len, "nothing after the end of the stream");
            return (messages, message);
        }
        assert_eq!(body[0], 0, "an uncompressed message");
        messages.push(message);
        body = &body[5 + len..];
    }
    panic!("the stream has no end-of-stream message");
}

fn envelope(json: &str) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

#[test]
fn plain_http_clients_call_the_gateway_in_json_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let gw = stack.addr(0);
    let key = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let key = key.trim();

    // Create and read back a customer in JSON: lowerCamelCase or proto names.
    let created = ok(
        &gw,
        key,
        "rapport.profile.v1.ProfileService/CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON",
            "person": {"givenName": "Ana", "family_name": "López"},
            "emails": [{"address": "ana@example.com"}], "countryCode": "ES"}}"#,
    );
    let customer = &created["customer"];
    let id = customer["customerId"].as_str().expect("an id").to_string();
    assert_eq!(customer["displayName"], "Ana López");
    assert_eq!(customer["state"], "CUSTOMER_STATE_ACTIVE");
    assert_eq!(customer["emails"][0]["address"], "ana@example.com");
    assert_eq!(customer["emails"][0]["primary"], true);
    let read = ok(
        &gw,
        key,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &format!(r#"{{"customer_id": "{id}"}}"#),
    );
    assert_eq!(&read["customer"], customer);

    // The same call in binary (application/proto): field 1, the id.
    let mut request = vec![0x0a, id.len() as u8];
    request.extend_from_slice(id.as_bytes());
    let auth = format!("Bearer {key}");
    let binary = http_post(
        &gw,
        "/rapport.profile.v1.ProfileService/GetCustomer",
        &[
            ("Content-Type", "application/proto"),
            ("Authorization", &auth),
            ("Connect-Protocol-Version", "1"),
            ("Connect-Timeout-Ms", "5000"),
        ],
        &request,
    );
    assert_eq!(binary.status, 200);
    assert_eq!(binary.header("content-type"), Some("application/proto"));
    assert_eq!(
        &binary.body[..2],
        &[0x0a, binary.body[1]],
        "field 1, the customer"
    );
    let text = String::from_utf8_lossy(&binary.body);
    assert!(text.contains(&id) && text.contains("Ana López"), "{text}");

    // An invalid argument: 400, Connect's code, the field violation decoded.
    let (status, e) = error(call(
        &gw,
        key,
        "rapport.profile.v1.ProfileService/GetCustomer",
        r#"{"customerId": "not-a-uuid"}"#,
    ));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["code"], "invalid_argument");
    assert!(
        e["message"].as_str().unwrap().contains("customer_id"),
        "{e}"
    );
    let detail = &e["details"][0];
    assert_eq!(detail["type"], "google.rpc.BadRequest");
    assert!(detail["value"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(
        detail["debug"]["fieldViolations"][0]["field"],
        "customer_id"
    );
    assert_eq!(
        detail["debug"]["fieldViolations"][0]["description"],
        "must be a UUID"
    );

    // Keys and tenancy are gRPC's own: no key, a wrong key, another tenant.
    let no_key = http_post(
        &gw,
        "/rapport.profile.v1.ProfileService/GetCustomer",
        &[JSON],
        format!(r#"{{"customerId": "{id}"}}"#).as_bytes(),
    );
    let (status, e) = error(no_key);
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthenticated")));
    let (status, e) = error(call(
        &gw,
        "rk_not_a_key",
        "rapport.profile.v1.ProfileService/GetCustomer",
        &format!(r#"{{"customerId": "{id}"}}"#),
    ));
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthenticated")));
    let tenant = ok(
        &gw,
        key,
        "rapport.gateway.v1.AdminService/CreateTenant",
        r#"{"tenant": {"displayName": "Other"}}"#,
    );
    let other_tenant = tenant["tenant"]["tenantId"].as_str().unwrap();
    let other = ok(
        &gw,
        key,
        "rapport.gateway.v1.AdminService/CreateApiKey",
        &format!(
            r#"{{"tenantId": "{other_tenant}", "displayName": "crm", "scopes": ["profile:read"]}}"#
        ),
    );
    let other_key = other["secret"].as_str().unwrap();
    let (status, e) = error(call(
        &gw,
        other_key,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &format!(r#"{{"customerId": "{id}"}}"#),
    ));
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );
    // A scope the key lacks.
    let (status, e) = error(call(
        &gw,
        other_key,
        "rapport.profile.v1.ProfileService/CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON"}}"#,
    ));
    assert_eq!(
        (status, e["code"].as_str()),
        (403, Some("permission_denied")),
        "{e}"
    );

    // Mistakes a plain HTTP client makes, each answered with what to do.
    for (method, headers, body, want_status, want_code, says) in [
        (
            "rapport.profile.v1.ProfileService/GetCustomer",
            vec![JSON],
            r#"{"customerld": "x"}"#,
            400,
            "invalid_argument",
            "customerld",
        ),
        (
            "rapport.profile.v1.ProfileService/GetCustomer",
            vec![JSON],
            "{not json",
            400,
            "invalid_argument",
            "GetCustomerRequest",
        ),
        (
            "rapport.profile.v1.ProfileService/GetCustomr",
            vec![JSON],
            "{}",
            501,
            "unimplemented",
            "no method",
        ),
        (
            "rapport.segmentation.v1.SegmentationService/WatchMembership",
            vec![JSON],
            "{}",
            501,
            "unimplemented",
            "application/connect+json",
        ),
        (
            "rapport.profile.v1.ProfileService/GetCustomer",
            vec![JSON, ("Connect-Timeout-Ms", "soon")],
            "{}",
            400,
            "invalid_argument",
            "connect-timeout-ms",
        ),
        (
            "rapport.profile.v1.ProfileService/GetCustomer",
            vec![JSON, ("Content-Encoding", "gzip")],
            "{}",
            501,
            "unimplemented",
            "uncompressed",
        ),
    ] {
        let mut headers = headers;
        headers.push(("Authorization", &auth));
        let (status, e) = error(http_post(
            &gw,
            &format!("/{method}"),
            &headers,
            body.as_bytes(),
        ));
        assert_eq!(status, want_status, "{method} {body}: {e}");
        assert_eq!(e["code"], want_code, "{method} {body}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{method} {body}: {e}"
        );
    }

    // A server stream in JSON: a purchase, then the tenant's purchase histories.
    ok(
        &gw,
        key,
        "rapport.interaction.v1.InteractionService/RecordInteraction",
        &format!(
            r#"{{"interaction": {{"customer": {{"customerId": "{id}"}}, "type": "INTERACTION_TYPE_PURCHASE",
                "occurTime": "2025-03-02T10:00:00Z", "amount": {{"currencyCode": "EUR", "units": "10", "nanos": 500000000}},
                "idempotencyKey": "connect-1"}}}}"#
        ),
    );
    let streamed = http_post(
        &gw,
        "/rapport.interaction.v1.InteractionService/ExportSummaries",
        &[
            ("Content-Type", "application/connect+json"),
            ("Authorization", &auth),
        ],
        &envelope(
            r#"{"calibrationEndTime": "2026-01-01T00:00:00Z", "periodUnit": "PERIOD_UNIT_DAY", "currencyCode": "EUR"}"#,
        ),
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(
        streamed.header("content-type"),
        Some("application/connect+json")
    );
    let (pages, end) = envelopes(&streamed.body);
    assert!(end.get("error").is_none(), "{end}");
    let summaries: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p["summaries"].as_array().unwrap().iter())
        .collect();
    assert_eq!(summaries.len(), 1, "{pages:?}");
    assert_eq!(summaries[0]["customerId"], id.as_str());
    assert_eq!(summaries[0]["historicalValue"]["units"], "10");
    assert_eq!(summaries[0]["historicalValue"]["nanos"], 500_000_000);
    // A stream's error arrives in its end-of-stream message.
    let failed = http_post(
        &gw,
        "/rapport.interaction.v1.InteractionService/ExportSummaries",
        &[
            ("Content-Type", "application/connect+json"),
            ("Authorization", &auth),
        ],
        &envelope(r#"{"periodUnit": "PERIOD_UNIT_DAY"}"#),
    );
    assert_eq!(failed.status, 200);
    let (pages, end) = envelopes(&failed.body);
    assert!(pages.is_empty());
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");

    // The real buf curl over Connect, answer and error details.
    let via_buf = buf_curl_connect(
        &gw,
        &auth,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &format!(r#"{{"customer_id": "{id}"}}"#),
    );
    assert!(via_buf.status.success(), "{via_buf:?}");
    let read: Value = serde_json::from_slice(&via_buf.stdout).unwrap();
    assert_eq!(&read["customer"], customer);
    let failed = buf_curl_connect(
        &gw,
        &auth,
        "rapport.profile.v1.ProfileService/GetCustomer",
        r#"{"customer_id": "x"}"#,
    );
    assert!(!failed.status.success());
    let shown: Value = serde_json::from_slice(&failed.stderr).expect("buf curl prints the error");
    assert_eq!(shown["code"], "invalid_argument", "{shown}");
    assert_eq!(
        shown["details"][0]["debug"]["fieldViolations"][0]["field"], "customer_id",
        "{shown}"
    );

    // Every Connect call was a gRPC call to the rest of the stack: the
    // gateway's metrics count them under their methods and codes.
    let metrics = support::http_get(stack.metrics_port, "/metrics");
    assert!(
        metrics.contains(r#"rapport_grpc_requests_total{component="gateway",service="rapport.profile.v1.ProfileService",method="GetCustomer",code="INVALID_ARGUMENT"}"#),
        "{metrics}"
    );
    stack.stop();
}

/// `buf curl --protocol connect` over HTTP/1.1, the schema from the contracts.
fn buf_curl_connect(gw: &str, auth: &str, method: &str, data: &str) -> std::process::Output {
    std::process::Command::new(support::buf())
        .current_dir(support::workspace())
        .args(["curl", "--protocol", "connect", "--schema", "."])
        .args(["-H", &format!("authorization: {auth}"), "-d", data])
        .arg(format!("http://{gw}/{method}"))
        .output()
        .expect("run buf curl (scripts/bootstrap.sh buf installs it)")
}
