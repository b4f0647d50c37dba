//! The engagement service through the gateway, driven by the real grpcurl on
//! `rapport dev`: a customer recorded by an interaction, a consent given, two
//! treatments created, then "who should we call, with what": the next best
//! actions with their explanations, an outcome recorded, the decisions
//! listed. `buf curl` reads the treatments too, and a key without the
//! engagement scopes is refused.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DevStack, buf_curl, grpcurl_ok, grpcurl_run};

const ENG: &str = "rapport.engagement.v1.EngagementService";

#[test]
fn next_best_actions_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let key = std::fs::read_to_string(stack.data_dir.join("dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());
    let gateway = stack.addr(0);
    let call = |method: &str, body: &str| -> Value {
        let out = grpcurl_ok(&["-H", &auth, "-d", body, &gateway, method]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
    };

    // A customer, from a purchase recorded by e-mail address, and its
    // marketing consent for e-mail.
    let now = support::utc_now_rfc3339();
    let recorded = call(
        "rapport.interaction.v1.InteractionService/RecordInteraction",
        &format!(
            r#"{{"interaction": {{"customer": {{"identifiers": {{"identifiers": [{{"kind": "IDENTIFIER_KIND_EMAIL", "value": "ana@example.com"}}]}}}},
                "type": "INTERACTION_TYPE_PURCHASE", "channel": "CHANNEL_WEB", "occurTime": "{now}",
                "amount": {{"currencyCode": "EUR", "units": "40"}}}}}}"#
        ),
    );
    let customer = recorded["interaction"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        "rapport.profile.v1.ProfileService/SetConsent",
        &format!(
            r#"{{"customerId": "{customer}", "channel": "CONSENT_CHANNEL_EMAIL", "purpose": "CONSENT_PURPOSE_MARKETING",
                "status": "CONSENT_STATUS_GRANTED", "source": "web-form"}}"#
        ),
    );

    // Ranked by score alone: the tenant empties its playbook (the default
    // one puts the kinds of each ladder rung's goal first).
    let policy = call(
        &format!("{ENG}/UpdatePolicy"),
        r#"{"policy": {"playbook": []}, "update_mask": {"paths": ["playbook"]}}"#,
    );
    assert_eq!(policy["policy"]["etag"], "p1", "{policy}");
    assert!(policy["policy"].get("playbook").is_none(), "{policy}");

    // Two treatments: an e-mail offer and a check-in call.
    let offer = call(
        &format!("{ENG}/CreateTreatment"),
        r#"{"treatment": {"name": "Spring offer", "kind": "TREATMENT_KIND_OFFER", "channel": "CONTACT_CHANNEL_EMAIL",
            "consentPurpose": "CONSENT_PURPOSE_MARKETING", "costPerContact": {"currencyCode": "EUR", "nanos": 500000000},
            "fixedValue": {"currencyCode": "EUR", "units": "20"}}, "requestId": "spring-1"}"#,
    );
    assert_eq!(offer["treatment"]["version"], "1", "{offer}");
    assert_eq!(offer["treatment"]["etag"], "t1", "{offer}");
    call(
        &format!("{ENG}/CreateTreatment"),
        r#"{"treatment": {"name": "Check-in call", "kind": "TREATMENT_KIND_CHECK_IN_CALL", "channel": "CONTACT_CHANNEL_PHONE",
            "consentPurpose": "CONSENT_PURPOSE_SERVICE", "costPerContact": {"currencyCode": "EUR", "units": "1"},
            "fixedValue": {"currencyCode": "EUR", "units": "30"}, "priorityPercent": 50}}"#,
    );
    let listed = buf_curl(&gateway, &format!("{ENG}/ListTreatments"), &auth, "{}");
    assert!(
        listed.contains("\"Spring offer\"") && listed.contains("\"Check-in call\""),
        "{listed}"
    );

    // Once the feeds have brought the customer and the consent: the offer
    // 0.1 × 20 − 0.5 = 1.50 beats the call (0.1 × 30 − 1) × 50 % = 1.00.
    let started = Instant::now();
    let nba = loop {
        let out = grpcurl_run(&[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"customerId": "{customer}", "limit": 5}}"#),
            &gateway,
            &format!("{ENG}/GetNextBestActions"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success()
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["actions"].as_array().is_some_and(|a| a.len() == 2)
        {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no actions: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let actions = nba["actions"].as_array().unwrap();
    assert_eq!(actions[0]["treatment"]["name"], "Spring offer", "{nba}");
    assert_eq!(actions[0]["expectedNetValue"]["units"], "1", "{nba}");
    assert_eq!(actions[0]["expectedNetValue"]["nanos"], 500000000, "{nba}");
    assert_eq!(actions[1]["treatment"]["name"], "Check-in call", "{nba}");
    assert!(
        actions[0]["eligibleBecause"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "marketing consent granted for the channel"),
        "{nba}"
    );
    assert!(
        actions[0]["rankReason"]
            .as_str()
            .unwrap()
            .contains("score 1.5000"),
        "{nba}"
    );

    // Customer 360 shows the same actions, as a preview.
    let c360 = call(
        "rapport.gateway.v1.Customer360Service/GetCustomer360",
        &format!(r#"{{"customerId": "{customer}"}}"#),
    );
    let part = c360["partStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "next_best_actions")
        .cloned()
        .unwrap();
    assert_eq!(part["codeName"], "OK", "{c360}");
    let shown = c360["nextBestActions"].as_array().unwrap();
    assert_eq!(shown[0]["treatment"]["name"], "Spring offer", "{c360}");
    assert!(
        shown[0].get("decisionId").is_none(),
        "a preview stores nothing: {c360}"
    );

    // The customer took the offer.
    let decision = actions[0]["decisionId"].as_str().unwrap();
    let d = call(
        &format!("{ENG}/RecordOutcome"),
        &format!(r#"{{"decisionId": "{decision}", "outcome": "OUTCOME_ACCEPTED"}}"#),
    );
    assert_eq!(d["decision"]["outcome"], "OUTCOME_ACCEPTED", "{d}");
    let accepted = call(
        &format!("{ENG}/ListDecisions"),
        r#"{"outcome": "OUTCOME_ACCEPTED"}"#,
    );
    assert_eq!(
        accepted["decisions"].as_array().map(Vec::len),
        Some(1),
        "{accepted}"
    );

    // A bad request is INVALID_ARGUMENT naming the field.
    let out = grpcurl_run(&[
        "-H",
        &auth,
        "-d",
        r#"{"treatment": {"name": "x", "kind": "TREATMENT_KIND_OFFER", "channel": "CONTACT_CHANNEL_EMAIL",
            "consentPurpose": "CONSENT_PURPOSE_MARKETING", "costPerContact": {"currencyCode": "eur"},
            "clvShareBps": 20000}}"#,
        &gateway,
        &format!("{ENG}/CreateTreatment"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("treatment.clv_share_bps"), "{err}");
    // With -format-error, grpcurl resolves google.rpc.BadRequest through the
    // gateway's reflection and prints the field violation decoded.
    let out = grpcurl_run(&[
        "-format-error",
        "-H",
        &auth,
        "-d",
        r#"{"treatment": {"name": "x", "kind": "TREATMENT_KIND_OFFER", "channel": "CONTACT_CHANNEL_EMAIL",
            "consentPurpose": "CONSENT_PURPOSE_MARKETING", "costPerContact": {"currencyCode": "EUR", "units": 1},
            "clvShareBps": 20000}}"#,
        &gateway,
        &format!("{ENG}/CreateTreatment"),
    ]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(!printed.contains("not recognized"), "{printed}");
    let start = printed
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {printed}"));
    let end = printed.rfind('}').unwrap_or(printed.len() - 1);
    let status: serde_json::Value =
        serde_json::from_str(&printed[start..=end]).unwrap_or_else(|e| panic!("{e}: {printed}"));
    let bad_request = status["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap_or_else(|| panic!("no BadRequest in {printed}"));
    assert_eq!(
        bad_request["fieldViolations"][0]["field"], "treatment.clv_share_bps",
        "{printed}"
    );

    // A key with only profile scopes cannot reach the engagement service.
    let created = call(
        "rapport.gateway.v1.AdminService/CreateApiKey",
        r#"{"displayName": "profile only", "scopes": ["profile:read"]}"#,
    );
    let narrow = format!(
        "authorization: Bearer {}",
        created["secret"].as_str().unwrap()
    );
    let out = grpcurl_run(&[
        "-H",
        &narrow,
        "-d",
        "{}",
        &gateway,
        &format!("{ENG}/ListTreatments"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The data-subject access request: everything held on the customer, in
    // one document, each part read back.
    let export = call(
        "rapport.gateway.v1.Customer360Service/ExportCustomerData",
        &format!(r#"{{"customerId": "{customer}"}}"#),
    );
    assert_eq!(export["customerId"], customer.as_str(), "{export}");
    assert!(export["exportTime"].is_string(), "{export}");
    assert_eq!(
        export["profile"]["emails"][0]["address"], "ana@example.com",
        "{export}"
    );
    let consent = &export["consentHistory"][0];
    assert_eq!(consent["channel"], "CONSENT_CHANNEL_EMAIL", "{export}");
    assert_eq!(consent["status"], "CONSENT_STATUS_GRANTED", "{export}");
    assert_eq!(consent["source"], "web-form", "{export}");
    let interactions = export["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 1, "{export}");
    assert_eq!(interactions[0]["amount"]["units"], "40", "{export}");
    assert_eq!(
        export["interactionSummary"]["currencies"][0]["totalValue"]["units"], "40",
        "{export}"
    );
    assert!(export["classification"].is_object(), "{export}");
    assert!(export.get("value").is_none(), "not scored yet: {export}");
    assert!(
        export.get("profitability").is_none(),
        "no cost model yet: {export}"
    );
    let decisions = export["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{export}");
    assert!(
        decisions
            .iter()
            .any(|d| d["decisionId"] == decision && d["outcome"] == "OUTCOME_ACCEPTED"),
        "{export}"
    );
    // The same document over plain HTTP/JSON (Connect).
    let via_http = support::http_post(
        &gateway,
        "/rapport.gateway.v1.Customer360Service/ExportCustomerData",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {}", key.trim())),
        ],
        format!(r#"{{"customerId": "{customer}"}}"#).as_bytes(),
    )
    .json();
    assert_eq!(via_http["decisions"], export["decisions"]);
    assert_eq!(via_http["interactions"], export["interactions"]);
    // An export needs every service's read scope.
    let out = grpcurl_run(&[
        "-H",
        &narrow,
        "-d",
        &format!(r#"{{"customerId": "{customer}"}}"#),
        &gateway,
        "rapport.gateway.v1.Customer360Service/ExportCustomerData",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PermissionDenied") && err.contains("interaction:read"),
        "{err}"
    );
    // Erased, the customer has nothing left to export.
    call(
        "rapport.profile.v1.ProfileService/EraseCustomer",
        &format!(r#"{{"customerId": "{customer}"}}"#),
    );
    let out = grpcurl_run(&[
        "-H",
        &auth,
        "-d",
        &format!(r#"{{"customerId": "{customer}"}}"#),
        &gateway,
        "rapport.gateway.v1.Customer360Service/ExportCustomerData",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Who exported the customer's data is in the audit trail: the two
    // exports, the refused one and the one after erasure.
    let started = Instant::now();
    let exports = loop {
        let listed = call(
            "rapport.gateway.v1.AdminService/ListAuditEvents",
            &format!(r#"{{"method": "ExportCustomerData", "resourceId": "{customer}"}}"#),
        );
        let events = listed["auditEvents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.len() >= 4 || started.elapsed() > Duration::from_secs(10) {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let codes: Vec<&str> = exports
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["NOT_FOUND", "PERMISSION_DENIED", "OK", "OK"],
        "newest first: {exports:?}"
    );
    assert_eq!(exports[3]["resource"], format!("customer_id={customer}"));
    stack.stop();
}
