//! The profile service through `rapport dev`, driven by the real grpcurl on
//! its direct development port: create, get, search, resolve and merge.

mod support;

use serde_json::Value;
use support::{DevStack, grpcurl_ok, grpcurl_run};

const SERVICE: &str = "rapport.profile.v1.ProfileService";
const TENANT: &str = "5d1c9a52-0f5e-4c39-9a57-3f0b8f7c2e11";

/// Calls `method` with `body` as the test tenant and parses the answer.
fn call(addr: &str, method: &str, body: &str) -> Value {
    let header = format!("x-rapport-tenant: {TENANT}");
    let out = grpcurl_ok(&[
        "-H",
        &header,
        "-d",
        body,
        addr,
        &format!("{SERVICE}/{method}"),
    ]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
}

#[test]
fn profile_create_get_search_resolve_merge_with_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let addr = stack.addr(1);

    // Reflection lists and describes the service.
    let listed = grpcurl_ok(&[&addr, "list"]);
    assert!(listed.lines().any(|l| l == SERVICE), "{listed}");
    let described = grpcurl_ok(&[&addr, "describe", SERVICE]);
    assert!(described.contains("rpc ResolveIdentity"), "{described}");

    // Create: input is normalised.
    let created = call(
        &addr,
        "CreateCustomer",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "person": {"given_name": "Ana", "family_name": "López"},
            "emails": [{"address": " Ana.Lopez@Example.com "}], "phones": [{"number": "911 23 45 67"}],
            "country_code": "es", "tags": ["VIP"]}}"#,
    );
    let customer = &created["customer"];
    let ana = customer["customerId"].as_str().unwrap().to_string();
    assert_eq!(customer["displayName"], "Ana López");
    assert_eq!(customer["emails"][0]["address"], "ana.lopez@example.com");
    assert_eq!(customer["phones"][0]["number"], "+34911234567");
    assert_eq!(customer["state"], "CUSTOMER_STATE_ACTIVE");

    // Get.
    let got = call(
        &addr,
        "GetCustomer",
        &format!(r#"{{"customer_id": "{ana}"}}"#),
    );
    assert_eq!(got["customer"]["customerId"], ana.as_str());
    assert_eq!(got["customer"]["tags"][0], "vip");

    // Search: by e-mail (exact) and by name (fuzzy).
    let found = call(
        &addr,
        "SearchCustomers",
        r#"{"query": "ana.lopez@example.com"}"#,
    );
    assert_eq!(found["results"][0]["customer"]["customerId"], ana.as_str());
    assert_eq!(found["results"][0]["matchKind"], "SEARCH_MATCH_KIND_EMAIL");
    let found = call(&addr, "SearchCustomers", r#"{"query": "Ana López"}"#);
    assert_eq!(found["results"][0]["customer"]["customerId"], ana.as_str());
    assert_eq!(found["results"][0]["matchKind"], "SEARCH_MATCH_KIND_NAME");

    // Resolve: a known phone finds Ana; a new e-mail creates a customer.
    let resolved = call(
        &addr,
        "ResolveIdentity",
        r#"{"identifiers": [{"kind": "IDENTIFIER_KIND_PHONE", "value": "+34 911 234 567"}]}"#,
    );
    assert_eq!(resolved["resolved"]["customer"]["customerId"], ana.as_str());
    assert!(resolved["resolved"].get("created").is_none());
    let resolved = call(
        &addr,
        "ResolveIdentity",
        r#"{"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "a.lopez@work.example"}],
            "traits": {"person": {"given_name": "Ana"}}}"#,
    );
    assert_eq!(resolved["resolved"]["created"], true);
    let twin = resolved["resolved"]["customer"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(twin, ana);

    // Merge the twin into Ana: the twin's id then leads to Ana.
    let merged = call(
        &addr,
        "MergeCustomers",
        &format!(r#"{{"survivor_customer_id": "{ana}", "merged_customer_id": "{twin}"}}"#),
    );
    let emails = merged["survivor"]["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 2, "{merged}");
    let got = call(
        &addr,
        "GetCustomer",
        &format!(r#"{{"customer_id": "{twin}"}}"#),
    );
    assert_eq!(got["merged"], true);
    assert_eq!(got["customer"]["customerId"], ana.as_str());

    // Updates name their fields with a mask, as the README shows it:
    // grpcurl reads the mask as an object of paths, buf curl in the proto3
    // JSON form (comma-separated camelCase paths in one string).
    let updated = call(
        &addr,
        "UpdateCustomer",
        &format!(
            r#"{{"customer": {{"customer_id": "{ana}", "locale": "es-ES", "tags": ["vip"]}},
                "update_mask": {{"paths": ["locale", "tags"]}}}}"#
        ),
    );
    let updated = &updated["customer"];
    assert_eq!(updated["locale"], "es-ES", "{updated}");
    assert_eq!(updated["tags"][0], "vip", "{updated}");
    assert_eq!(
        updated["emails"].as_array().map(Vec::len),
        Some(2),
        "{updated}"
    );
    let out = support::buf_curl(
        &addr,
        &format!("{SERVICE}/UpdateCustomer"),
        &format!("x-rapport-tenant: {TENANT}"),
        &format!(
            r#"{{"customer": {{"customer_id": "{ana}", "locale": "fr-FR", "tags": ["x"]}},
                "update_mask": "locale"}}"#
        ),
    );
    let updated: Value = serde_json::from_str(&out).unwrap();
    let updated = &updated["customer"];
    assert_eq!(updated["locale"], "fr-FR", "{updated}");
    assert_eq!(
        updated["tags"][0], "vip",
        "only the masked field changes: {updated}"
    );

    // Errors come back as gRPC codes with details.
    let header = format!("x-rapport-tenant: {TENANT}");
    let out = grpcurl_run(&[
        "-H",
        &header,
        "-d",
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "emails": [{"address": "nope"}]}}"#,
        &addr,
        &format!("{SERVICE}/CreateCustomer"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("customer.emails[0].address"),
        "{err}"
    );
    let out = grpcurl_run(&[
        "-d",
        &format!(r#"{{"customer_id": "{ana}"}}"#),
        &addr,
        &format!("{SERVICE}/GetCustomer"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));

    stack.stop();
}
