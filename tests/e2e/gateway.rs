//! The whole system through the gateway, as clients use it: API keys, tenants
//! created with AdminService, services reached with the real grpcurl and
//! buf curl, and no tenant's key reaching another tenant's data.

mod support;

use serde_json::Value;
use support::{DevStack, buf_curl, grpcurl_ok, grpcurl_run};

fn call(addr: &str, key: &str, method: &str, body: &str) -> Value {
    let auth = format!("authorization: Bearer {key}");
    let out = grpcurl_ok(&["-H", &auth, "-d", body, addr, method]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
}

fn fails(addr: &str, key: &str, method: &str, body: &str) -> String {
    let auth = format!("authorization: Bearer {key}");
    let out = grpcurl_run(&["-H", &auth, "-d", body, addr, method]);
    assert!(!out.status.success(), "{method} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh admin key of `tenant`, made by the operator.
fn acme_admin_for(gw: &str, operator: &str, tenant: &str) -> String {
    let key = call(
        gw,
        operator,
        "rapport.gateway.v1.AdminService/CreateApiKey",
        &format!(r#"{{"tenant_id": "{tenant}", "display_name": "admin", "scopes": ["admin"]}}"#),
    );
    key["secret"].as_str().unwrap().to_string()
}

#[test]
fn tenants_reach_their_own_customers_through_the_gateway_only() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let gw = stack.addr(0);
    let operator = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let operator = operator.trim();

    // Reflection through the gateway lists what it serves.
    let auth = format!("authorization: Bearer {operator}");
    let listed = grpcurl_ok(&["-H", &auth, &gw, "list"]);
    for service in [
        "rapport.profile.v1.ProfileService",
        "rapport.gateway.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} not in {listed}"
        );
    }
    // Health per backend service name.
    let health = grpcurl_ok(&[
        "-d",
        r#"{"service":"rapport.profile.v1.ProfileService"}"#,
        &gw,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("\"SERVING\""), "{health}");

    // Two tenants, each with a key for profiles.
    let mut keys = Vec::new();
    let mut keys_tenants = Vec::new();
    for name in ["Acme", "Globex"] {
        let tenant = call(
            &gw,
            operator,
            "rapport.gateway.v1.AdminService/CreateTenant",
            &format!(r#"{{"tenant": {{"display_name": "{name}"}}}}"#),
        );
        let tenant_id = tenant["tenant"]["tenantId"].as_str().unwrap().to_string();
        let key = call(
            &gw,
            operator,
            "rapport.gateway.v1.AdminService/CreateApiKey",
            &format!(
                r#"{{"tenant_id": "{tenant_id}", "display_name": "crm", "scopes": ["profile:*"]}}"#
            ),
        );
        keys.push(key["secret"].as_str().unwrap().to_string());
        keys_tenants.push(tenant_id);
    }
    let (acme, globex) = (&keys[0], &keys[1]);

    let created = call(
        &gw,
        acme,
        "rapport.profile.v1.ProfileService/CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "person": {"given_name": "Ana", "family_name": "López"}, "emails": [{"address": "ana@acme.example"}]}}"#,
    );
    let ana = created["customer"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    let get = format!(r#"{{"customer_id": "{ana}"}}"#);
    let got = call(
        &gw,
        acme,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &get,
    );
    assert_eq!(got["customer"]["displayName"], "Ana López");

    // The same call with buf curl.
    let via_buf = buf_curl(
        &gw,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &format!("authorization: Bearer {acme}"),
        &get,
    );
    assert!(via_buf.contains("Ana López"), "{via_buf}");

    // Globex's key sees nothing of Acme's: not by id, not by search, not by e-mail.
    let err = fails(
        &gw,
        globex,
        "rapport.profile.v1.ProfileService/GetCustomer",
        &get,
    );
    assert!(err.contains("NotFound"), "{err}");
    let found = call(
        &gw,
        globex,
        "rapport.profile.v1.ProfileService/SearchCustomers",
        r#"{"query": "ana@acme.example"}"#,
    );
    assert!(
        found
            .get("results")
            .is_none_or(|r| r.as_array().is_none_or(|a| a.is_empty())),
        "{found}"
    );
    // Resolving Acme's e-mail for Globex creates Globex's own customer.
    let resolved = call(
        &gw,
        globex,
        "rapport.profile.v1.ProfileService/ResolveIdentity",
        r#"{"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "ana@acme.example"}]}"#,
    );
    assert_ne!(
        resolved["resolved"]["customer"]["customerId"]
            .as_str()
            .unwrap(),
        ana
    );

    // Posing as Acme with tenant metadata changes nothing: the key decides.
    let out = grpcurl_run(&[
        "-H",
        &format!("authorization: Bearer {globex}"),
        "-H",
        "x-rapport-tenant: 00000000-0000-0000-0000-000000000000",
        "-d",
        &get,
        &gw,
        "rapport.profile.v1.ProfileService/GetCustomer",
    ]);
    assert!(!out.status.success());

    // Customer 360: the profile arrives; every part the key has no scope for is
    // left out with PERMISSION_DENIED naming the scope; the call succeeds.
    let c360 = call(
        &gw,
        acme,
        "rapport.gateway.v1.Customer360Service/GetCustomer360",
        &get,
    );
    assert_eq!(c360["customerId"], ana.as_str());
    assert_eq!(c360["profile"]["displayName"], "Ana López");
    assert!(c360.get("complete").is_none(), "not complete: {c360}");
    let parts = c360["partStatuses"].as_array().unwrap();
    let status = |part: &str| {
        parts
            .iter()
            .find(|p| p["part"] == part)
            .unwrap_or_else(|| panic!("no {part} in {c360}"))
    };
    assert!(status("profile")["codeName"] == "OK", "{c360}");
    assert_eq!(status("value")["codeName"], "PERMISSION_DENIED");
    assert_eq!(status("value")["message"], "missing scope valuation:read");
    // An unknown customer is NOT_FOUND for the whole call.
    let err = fails(
        &gw,
        acme,
        "rapport.gateway.v1.Customer360Service/GetCustomer360",
        r#"{"customer_id": "00000000-0000-4000-8000-000000000000"}"#,
    );
    assert!(err.contains("NotFound"), "{err}");

    // A purchase recorded through the gateway by a key that may do everything
    // with Acme's customers; Customer 360 then has the interaction parts too.
    let acme_tenant = call(
        &gw,
        acme_admin_for(&gw, operator, &keys_tenants[0]).as_str(),
        "rapport.gateway.v1.AdminService/GetTenant",
        "{}",
    );
    assert_eq!(acme_tenant["tenant"]["displayName"], "Acme");
    let full = call(
        &gw,
        operator,
        "rapport.gateway.v1.AdminService/CreateApiKey",
        &format!(
            r#"{{"tenant_id": "{}", "display_name": "crm-all", "scopes": ["profile:*", "interaction:*", "segmentation:read", "valuation:read"]}}"#,
            keys_tenants[0]
        ),
    );
    let full = full["secret"].as_str().unwrap().to_string();
    let purchase = format!(
        r#"{{"interaction": {{"customer": {{"customer_id": "{ana}"}}, "type": "INTERACTION_TYPE_PURCHASE",
            "occur_time": "2025-03-02T10:00:00Z", "channel": "CHANNEL_WEB",
            "amount": {{"currency_code": "EUR", "units": "40", "nanos": 500000000}}, "idempotency_key": "web:order-1"}}}}"#
    );
    let recorded = call(
        &gw,
        &full,
        "rapport.interaction.v1.InteractionService/RecordInteraction",
        &purchase,
    );
    assert_eq!(recorded["interaction"]["customerId"], ana.as_str());
    let err = fails(
        &gw,
        acme,
        "rapport.interaction.v1.InteractionService/RecordInteraction",
        &purchase,
    );
    assert!(err.contains("missing scope interaction:write"), "{err}");
    let c360 = call(
        &gw,
        &full,
        "rapport.gateway.v1.Customer360Service/GetCustomer360",
        &get,
    );
    let parts = c360["partStatuses"].as_array().unwrap();
    let code = |part: &str| {
        parts
            .iter()
            .find(|p| p["part"] == part)
            .map(|p| p["codeName"].clone())
            .unwrap()
    };
    assert_eq!(code("interaction_summary"), "OK", "{c360}");
    assert_eq!(code("latest_interactions"), "OK", "{c360}");
    assert_eq!(
        c360["latestInteractions"][0]["interactionId"],
        recorded["interaction"]["interactionId"]
    );

    // Scopes: a read-only key cannot write; no key is refused; feeds are internal.
    let err = fails(
        &gw,
        "",
        "rapport.profile.v1.ProfileService/GetCustomer",
        &get,
    );
    assert!(err.contains("Unauthenticated"), "{err}");
    let err = fails(
        &gw,
        acme,
        "rapport.gateway.v1.AdminService/ListTenants",
        "{}",
    );
    assert!(err.contains("missing scope admin"), "{err}");
    let err = fails(
        &gw,
        operator,
        "rapport.profile.v1.ProfileService/WatchChanges",
        "{}",
    );
    assert!(
        err.contains("Unimplemented") || err.contains("does not include a method"),
        "{err}"
    );

    stack.stop();
}

/// A grpcurl call through the gateway with `key`, sending `first`. A client
/// stream (`more` true) is fed from a pipe that stays open, so the call lasts
/// until the server ends it or the pipe is closed.
fn open_stream(gw: &str, key: &str, method: &str, first: &str, more: bool) -> std::process::Child {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let auth = format!("authorization: Bearer {key}");
    let data = if more { "@" } else { first };
    let mut child = Command::new(support::grpcurl())
        .args(["-plaintext", "-H", &auth, "-d", data, gw, method])
        .stdin(if more { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run grpcurl");
    if more {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(first.as_bytes()).expect("send");
        stdin.flush().expect("flush");
    }
    child
}

#[test]
fn revoking_a_key_ends_its_open_streams_of_every_public_streaming_method() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let gw = stack.addr(0);
    let operator = std::fs::read_to_string(dir.path().join("data/dev-api-key")).unwrap();
    let operator = operator.trim();
    let created = call(
        &gw,
        operator,
        "rapport.gateway.v1.AdminService/CreateApiKey",
        r#"{"display_name": "streams", "scopes": ["profile:write", "interaction:write", "segmentation:read"]}"#,
    );
    let key = created["secret"].as_str().unwrap().to_string();
    let key_id = created["apiKey"]["apiKeyId"].as_str().unwrap().to_string();

    // Every public streaming method that stays open as long as its client
    // wants: two client streams (a message sent, more to come) and the
    // server stream of membership changes. (ExportSummaries, the other
    // public stream, ends on its own once its snapshot is sent.)
    let one_purchase = r#"{"interactions": [{"customer": {"identifiers": {"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "ann@example.com"}]}},
        "type": "INTERACTION_TYPE_PURCHASE", "occur_time": "2025-03-02T10:00:00Z",
        "amount": {"currency_code": "EUR", "units": "5"}, "idempotency_key": "pos:1"}]}"#;
    let one_customer = r#"{"items": [{"customer": {"kind": "CUSTOMER_KIND_PERSON", "emails": [{"address": "bo@example.com"}]}}]}"#;
    let mut streams = vec![
        (
            "RecordInteractions",
            open_stream(
                &gw,
                &key,
                "rapport.interaction.v1.InteractionService/RecordInteractions",
                one_purchase,
                true,
            ),
        ),
        (
            "ImportCustomers",
            open_stream(
                &gw,
                &key,
                "rapport.profile.v1.ProfileService/ImportCustomers",
                one_customer,
                true,
            ),
        ),
        (
            "WatchMembership",
            open_stream(
                &gw,
                &key,
                "rapport.segmentation.v1.SegmentationService/WatchMembership",
                "{}",
                false,
            ),
        ),
    ];
    // The streams are open and working: the messages sent are written.
    let found = |email: &str| {
        let answer = call(
            &gw,
            operator,
            "rapport.profile.v1.ProfileService/SearchCustomers",
            &format!(r#"{{"query": "{email}"}}"#),
        );
        answer["results"].as_array().is_some_and(|r| !r.is_empty())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(found("ann@example.com") && found("bo@example.com")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the client streams wrote nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for (name, child) in streams.iter_mut() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name} ended before the key was revoked"
        );
    }

    call(
        &gw,
        operator,
        "rapport.gateway.v1.AdminService/RevokeApiKey",
        &format!(r#"{{"api_key_id": "{key_id}"}}"#),
    );
    let revoked = std::time::Instant::now();
    // The server stream's client is reading: it sees the end as it comes.
    // The contract's bound is 5 s; the margin covers grpcurl itself.
    let (name, watch) = streams.pop().expect("WatchMembership");
    let mut watch = watch;
    while watch.try_wait().unwrap().is_none() {
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(15),
            "{name} still open {:?} after its key was revoked",
            revoked.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("{name} ended {:?} after the revocation", revoked.elapsed());
    let mut ended = vec![(name, watch.wait_with_output().unwrap())];
    // grpcurl reads a client stream's messages from its input before it
    // looks at the call again, so the client streams are given one more
    // message once the 5 s bound has passed, then closed: that message
    // must find the call already ended by the gateway, and not be written.
    std::thread::sleep(std::time::Duration::from_secs(6).saturating_sub(revoked.elapsed()));
    let late = [
        r#"{"interactions": [{"customer": {"identifiers": {"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "cy@example.com"}]}},
        "type": "INTERACTION_TYPE_PURCHASE", "occur_time": "2025-03-02T10:00:00Z",
        "amount": {"currency_code": "EUR", "units": "5"}, "idempotency_key": "pos:2"}]}"#,
        r#"{"items": [{"customer": {"kind": "CUSTOMER_KIND_PERSON", "emails": [{"address": "di@example.com"}]}}]}"#,
    ];
    for ((name, mut child), message) in streams.into_iter().zip(late) {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        // The pipe may already be closed by a grpcurl that noticed the end.
        let _ = stdin.write_all(message.as_bytes());
        drop(stdin);
        ended.push((name, child.wait_with_output().unwrap()));
    }
    for (name, out) in ended {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Unauthenticated") && err.contains("api key revoked"),
            "{name}: {err}"
        );
    }
    assert!(
        !found("cy@example.com") && !found("di@example.com"),
        "a message sent after the revocation was written"
    );
    stack.stop();
}
