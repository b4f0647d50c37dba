//! The audit trail, driven with the real grpcurl through a dev stack's
//! gateway: writes and admin actions are recorded with who, what, the ids
//! named and the outcome (reads are not), no personal data is kept, filters
//! and pages work, and each tenant sees only its own events while the
//! operator sees all.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DevStack, grpcurl_ok, grpcurl_run};

fn call(gw: &str, key: &str, method: &str, body: &str) -> Value {
    let auth = format!("authorization: Bearer {key}");
    serde_json::from_str(&grpcurl_ok(&["-H", &auth, "-d", body, gw, method])).unwrap()
}

fn refused(gw: &str, key: &str, method: &str, body: &str) -> String {
    let auth = format!("authorization: Bearer {key}");
    let out = grpcurl_run(&["-H", &auth, "-d", body, gw, method]);
    assert!(!out.status.success(), "{method} {body} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The events `filter` lists with `key`, across every page of `page_size`.
fn audit(gw: &str, key: &str, filter: &str, page_size: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let body = format!(
            r#"{{{filter}{comma}"page_size": {page_size}, "page_token": "{token}"}}"#,
            comma = if filter.is_empty() { "" } else { ", " }
        );
        let page = call(
            gw,
            key,
            "rapport.gateway.v1.AdminService/ListAuditEvents",
            &body,
        );
        events.extend(page["auditEvents"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return events,
        }
    }
}

/// Waits (events are written within about a second) until `filter` lists `n` events.
fn audit_until(gw: &str, key: &str, filter: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let events = audit(gw, key, filter, 100);
        if events.len() >= n || start.elapsed() > Duration::from_secs(15) {
            assert_eq!(events.len(), n, "{filter}: {events:#?}");
            return events;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn writes_and_admin_actions_are_audited_without_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let gw = stack.addr(0);
    let operator = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let operator = operator.trim();

    // A tenant with an admin key, a writer and a reader.
    let tenant = call(
        &gw,
        operator,
        "rapport.gateway.v1.AdminService/CreateTenant",
        r#"{"tenant": {"display_name": "Acme"}}"#,
    );
    let acme = tenant["tenant"]["tenantId"].as_str().unwrap().to_string();
    let key = |scopes: &str| {
        let created = call(
            &gw,
            operator,
            "rapport.gateway.v1.AdminService/CreateApiKey",
            &format!(r#"{{"tenant_id": "{acme}", "display_name": "k", "scopes": [{scopes}]}}"#),
        );
        (
            created["secret"].as_str().unwrap().to_string(),
            created["apiKey"]["apiKeyId"].as_str().unwrap().to_string(),
            created["apiKey"]["prefix"].as_str().unwrap().to_string(),
        )
    };
    let (admin, _, _) = key(r#""admin""#);
    let (writer, writer_id, writer_prefix) = key(r#""profile:write", "profile:read""#);
    let (reader, reader_id, _) = key(r#""profile:read""#);

    // Writes, a read, a refused write, and admin actions.
    let created = call(
        &gw,
        &writer,
        "rapport.profile.v1.ProfileService/CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "person": {"given_name": "Ana", "family_name": "López"},
            "emails": [{"address": "ana.audit@example.com"}]}, "request_id": "create-ana-1"}"#,
    );
    let customer = created["customer"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &gw,
        &writer,
        "rapport.profile.v1.ProfileService/UpdateCustomer",
        &format!(
            r#"{{"customer": {{"customer_id": "{customer}", "locale": "es-ES"}}, "update_mask": {{"paths": ["locale"]}}}}"#
        ),
    );
    call(
        &gw,
        &writer,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &format!(r#"{{"customer_id": "{customer}"}}"#),
    );
    let denied = refused(
        &gw,
        &reader,
        "rapport.profile.v1.ProfileService/UpdateCustomer",
        &format!(
            r#"{{"customer": {{"customer_id": "{customer}", "locale": "fr-FR"}}, "update_mask": {{"paths": ["locale"]}}}}"#
        ),
    );
    assert!(denied.contains("PermissionDenied"), "{denied}");
    let (_, doomed_id, _) = key(r#""profile:read""#);
    call(
        &gw,
        &admin,
        "rapport.gateway.v1.AdminService/RevokeApiKey",
        &format!(r#"{{"api_key_id": "{doomed_id}"}}"#),
    );
    // A call without a valid key names nobody and is not recorded.
    refused(
        &gw,
        "rk_nobody",
        "rapport.profile.v1.ProfileService/CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON"}}"#,
    );

    // Acme's own trail: create, update, the refused update, the revocation
    // (its keys were created by the operator, in the operator's trail).
    let events = audit_until(&gw, &admin, "", 4);
    let methods: Vec<&str> = events
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "RevokeApiKey",
            "UpdateCustomer",
            "UpdateCustomer",
            "CreateCustomer"
        ],
        "newest first"
    );
    let [revoked, denied, updated, create] = &events[..] else {
        unreachable!()
    };
    assert_eq!(create["service"], "rapport.profile.v1.ProfileService");
    assert_eq!(create["tenantId"], acme.as_str());
    assert_eq!(create["apiKeyId"], writer_id.as_str());
    assert_eq!(create["apiKeyPrefix"], writer_prefix.as_str());
    assert_eq!(create["code"], "OK");
    assert_eq!(create["requestId"], "create-ana-1");
    assert!(create.get("resource").is_none(), "a create names no id yet");
    // A trace id when tracing is on (an OTLP endpoint is configured).
    assert!(
        create["traceId"]
            .as_str()
            .is_none_or(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())),
        "{create}"
    );
    assert_eq!(updated["resource"], format!("customer_id={customer}"));
    assert_eq!(updated["code"], "OK");
    assert_eq!(denied["code"], "PERMISSION_DENIED");
    assert_eq!(denied["apiKeyId"], reader_id.as_str());
    assert_eq!(revoked["service"], "rapport.gateway.v1.AdminService");
    assert_eq!(revoked["resource"], format!("api_key_id={doomed_id}"));
    // Nothing of the payload: no name, no address, no locale.
    let raw = serde_json::to_string(&events).unwrap();
    for personal in ["Ana", "López", "example.com", "es-ES", "fr-FR"] {
        assert!(!raw.contains(personal), "{personal} in {raw}");
    }

    // Filters: method, id, outcome, key, time window; and pages.
    assert_eq!(
        audit(&gw, &admin, r#""method": "UpdateCustomer""#, 100).len(),
        2
    );
    assert_eq!(
        audit(
            &gw,
            &admin,
            r#""method": "rapport.profile.v1.ProfileService/CreateCustomer""#,
            100
        )
        .len(),
        1
    );
    assert_eq!(
        audit(&gw, &admin, &format!(r#""resource_id": "{customer}""#), 100).len(),
        2
    );
    let refusals = audit(&gw, &admin, r#""code": "permission_denied""#, 100);
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0]["apiKeyId"], reader_id.as_str());
    assert_eq!(
        audit(&gw, &admin, &format!(r#""api_key_id": "{writer_id}""#), 100).len(),
        2
    );
    assert_eq!(
        audit(&gw, &admin, r#""end_time": "2001-01-01T00:00:00Z""#, 100).len(),
        0
    );
    assert_eq!(
        audit(&gw, &admin, r#""start_time": "2001-01-01T00:00:00Z""#, 100).len(),
        4
    );
    assert_eq!(audit(&gw, &admin, "", 1), events, "one per page");

    // Tenancy: Acme sees only its own; the operator sees every tenant, or one.
    let foreign = refused(
        &gw,
        &admin,
        "rapport.gateway.v1.AdminService/ListAuditEvents",
        r#"{"tenant_id": "00000000-0000-0000-0000-000000000001"}"#,
    );
    assert!(foreign.contains("PermissionDenied"), "{foreign}");
    let everything = audit(&gw, operator, "", 100);
    assert!(everything.len() >= 4 + 5, "{}", everything.len());
    assert!(
        everything
            .iter()
            .any(|e| e["method"] == "CreateTenant" && e["tenantId"] != acme.as_str())
    );
    assert_eq!(
        audit(&gw, operator, &format!(r#""tenant_id": "{acme}""#), 100),
        events
    );

    // Hostile filters name their field.
    for (filter, field) in [
        (r#""code": "SOMETIMES""#, "code"),
        (r#""method": "a/b/c""#, "method"),
        (r#""method": "/GetCustomer""#, "method"),
        (r#""api_key_id": "not-a-uuid""#, "api_key_id"),
        (r#""tenant_id": "not-a-uuid""#, "tenant_id"),
        (
            r#""start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z""#,
            "end_time",
        ),
        (r#""page_size": -1"#, "page_size"),
        (r#""page_token": "forged""#, "page_token"),
    ] {
        let auth = format!("authorization: Bearer {admin}");
        let out = grpcurl_run(&[
            "-format-error",
            "-H",
            &auth,
            "-d",
            &format!("{{{filter}}}"),
            &gw,
            "rapport.gateway.v1.AdminService/ListAuditEvents",
        ]);
        let err: String = (String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr))
            .split_whitespace()
            .collect();
        assert!(!out.status.success(), "{filter}");
        assert!(
            err.contains("\"code\":3") && err.contains(&format!("\"field\":\"{field}\"")),
            "{filter}: {err}"
        );
    }
    stack.stop();
}
