//! The interaction service through `rapport dev`, driven by the real grpcurl
//! on its direct development port: campaigns, recording (one and streamed),
//! timelines, service requests, summaries, exports, reports, and a merge in
//! the profile service arriving through its feed.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DevStack, grpcurl_ok, grpcurl_run};

const INTERACTIONS: &str = "rapport.interaction.v1.InteractionService";
const CAMPAIGNS: &str = "rapport.interaction.v1.CampaignService";
const PROFILE: &str = "rapport.profile.v1.ProfileService";
const TENANT: &str = "7b0f3c1e-2a4d-4e5f-8a9b-0c1d2e3f4a5b";

fn call(addr: &str, method: &str, body: &str) -> Value {
    let header = format!("x-rapport-tenant: {TENANT}");
    let out = grpcurl_ok(&["-H", &header, "-d", body, addr, method]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
}

/// Every JSON object grpcurl printed (server streams print one per message).
fn call_stream(addr: &str, method: &str, body: &str) -> Vec<Value> {
    let header = format!("x-rapport-tenant: {TENANT}");
    let out = grpcurl_ok(&["-H", &header, "-d", body, addr, method]);
    serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}")))
        .collect()
}

#[test]
fn interaction_service_with_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let addr = stack.addr(2);

    let listed = grpcurl_ok(&[&addr, "list"]);
    assert!(listed.lines().any(|l| l == INTERACTIONS), "{listed}");
    assert!(listed.lines().any(|l| l == CAMPAIGNS), "{listed}");
    let described = grpcurl_ok(&[&addr, "describe", INTERACTIONS]);
    assert!(
        described.contains("rpc RecordInteractions ( stream"),
        "{described}"
    );

    // A campaign.
    let campaign = call(
        &addr,
        &format!("{CAMPAIGNS}/CreateCampaign"),
        r#"{"campaign": {"name": "Spring sale", "channel": "CHANNEL_EMAIL",
            "start_time": "2025-03-01T00:00:00Z"}, "request_id": "c-1"}"#,
    );
    let campaign_id = campaign["campaign"]["campaignId"]
        .as_str()
        .unwrap()
        .to_string();

    // A purchase by e-mail: the profile service resolves (creates) the customer.
    let purchase = r#"{"interaction": {
        "customer": {"identifiers": {"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "Eve@Example.com"}]}},
        "type": "INTERACTION_TYPE_PURCHASE", "occur_time": "2025-03-02T10:00:00Z",
        "channel": "CHANNEL_WEB", "amount": {"currency_code": "EUR", "units": "40", "nanos": 500000000},
        "line_items": [{"sku": "sku-1", "name": "Shoe", "quantity": 1, "unit_price": {"currency_code": "EUR", "units": "40", "nanos": 500000000}}],
        "idempotency_key": "web:order-1"}}"#;
    let first = call(
        &addr,
        &format!("{INTERACTIONS}/RecordInteraction"),
        purchase,
    );
    assert_eq!(first["created"], true);
    assert_eq!(first["customerCreated"], true);
    let eve = first["interaction"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    let order = first["interaction"]["interactionId"]
        .as_str()
        .unwrap()
        .to_string();
    // The retry is recognised.
    let retry = call(
        &addr,
        &format!("{INTERACTIONS}/RecordInteraction"),
        purchase,
    );
    assert!(retry.get("created").is_none(), "{retry}");
    assert_eq!(retry["interaction"]["interactionId"], order.as_str());

    // A stream of three: a click on the campaign, a service request, and an
    // invalid one.
    let stream_body = format!(
        r#"{{"interactions": [
            {{"customer": {{"customer_id": "{eve}"}}, "type": "INTERACTION_TYPE_CAMPAIGN_CLICKED",
              "occur_time": "2025-03-01T12:00:00Z", "campaign_id": "{campaign_id}"}},
            {{"customer": {{"customer_id": "{eve}"}}, "type": "INTERACTION_TYPE_SERVICE_REQUEST",
              "occur_time": "2025-03-03T09:00:00Z", "idempotency_key": "ticket-7"}}]}}
           {{"interactions": [
            {{"customer": {{"customer_id": "{eve}"}}, "type": "INTERACTION_TYPE_PURCHASE",
              "occur_time": "2025-03-03T09:00:00Z"}}]}}"#
    );
    let bulk = call(
        &addr,
        &format!("{INTERACTIONS}/RecordInteractions"),
        &stream_body,
    );
    assert_eq!(bulk["acceptedCount"], "2");
    assert_eq!(bulk["rejectedCount"], "1");
    assert_eq!(bulk["rejections"][0]["index"], "2");
    assert_eq!(bulk["rejections"][0]["reason"], "REJECTION_REASON_INVALID");
    assert_eq!(
        bulk["rejections"][0]["fieldViolations"][0]["field"],
        "amount"
    );

    // The timeline, oldest first.
    let timeline = call(
        &addr,
        &format!("{INTERACTIONS}/ListInteractions"),
        &format!(r#"{{"customer_id": "{eve}", "order": "TIMELINE_ORDER_OLDEST_FIRST"}}"#),
    );
    let types: Vec<&str> = timeline["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "INTERACTION_TYPE_CAMPAIGN_CLICKED",
            "INTERACTION_TYPE_PURCHASE",
            "INTERACTION_TYPE_SERVICE_REQUEST"
        ]
    );
    let ticket = timeline["interactions"][2]["interactionId"]
        .as_str()
        .unwrap()
        .to_string();
    let got = call(
        &addr,
        &format!("{INTERACTIONS}/GetInteraction"),
        &format!(r#"{{"interaction_id": "{order}"}}"#),
    );
    assert_eq!(got["interaction"]["amount"]["units"], "40");

    // The service request moves on; an illegal step is FAILED_PRECONDITION.
    let moved = call(
        &addr,
        &format!("{INTERACTIONS}/UpdateServiceRequest"),
        &format!(
            r#"{{"interaction_id": "{ticket}", "status": "SERVICE_REQUEST_STATUS_IN_PROGRESS"}}"#
        ),
    );
    assert_eq!(
        moved["interaction"]["serviceRequestStatus"],
        "SERVICE_REQUEST_STATUS_IN_PROGRESS"
    );
    let header = format!("x-rapport-tenant: {TENANT}");
    let illegal = grpcurl_run(&[
        "-H",
        &header,
        "-d",
        &format!(r#"{{"interaction_id": "{ticket}", "status": "SERVICE_REQUEST_STATUS_CLOSED"}}"#),
        &addr,
        &format!("{INTERACTIONS}/UpdateServiceRequest"),
    ]);
    assert!(!illegal.status.success());
    assert!(String::from_utf8_lossy(&illegal.stderr).contains("FailedPrecondition"));

    // Summary and export.
    let summary = call(
        &addr,
        &format!("{INTERACTIONS}/GetCustomerSummary"),
        &format!(r#"{{"customer_id": "{eve}", "as_of": "2025-03-31T00:00:00Z"}}"#),
    );
    let s = &summary["summary"];
    assert_eq!(s["purchaseCount"], "1");
    assert_eq!(s["currencies"][0]["totalValue"]["units"], "40");
    assert_eq!(s["openServiceRequests"], "1");
    let export = call_stream(
        &addr,
        &format!("{INTERACTIONS}/ExportSummaries"),
        r#"{"calibration_end_time": "2025-04-01T00:00:00Z", "period_unit": "PERIOD_UNIT_WEEK"}"#,
    );
    assert_eq!(export.len(), 1);
    assert_eq!(export[0]["summaries"][0]["customerId"], eve.as_str());
    assert_eq!(export[0]["summaries"][0]["currencyCode"], "EUR");

    // The campaign report credits the purchase after the click.
    let report = call(
        &addr,
        &format!("{CAMPAIGNS}/GetCampaignReport"),
        &format!(r#"{{"campaign_id": "{campaign_id}"}}"#),
    );
    assert_eq!(report["report"]["clickedCount"], "1");
    assert_eq!(report["report"]["attributedRevenue"][0]["units"], "40");

    // Invalid input and a missing tenant.
    let bad = grpcurl_run(&[
        "-H",
        &header,
        "-d",
        r#"{"interaction": {"type": "INTERACTION_TYPE_PURCHASE"}}"#,
        &addr,
        &format!("{INTERACTIONS}/RecordInteraction"),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument"));
    let anonymous = grpcurl_run(&[
        "-d",
        &format!(r#"{{"interaction_id": "{order}"}}"#),
        &addr,
        &format!("{INTERACTIONS}/GetInteraction"),
    ]);
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"));

    // Merge Eve into another customer in the profile service: her
    // interactions follow through the feed.
    let other = call(
        &stack.addr(1),
        &format!("{PROFILE}/CreateCustomer"),
        r#"{"customer": {"kind": "CUSTOMER_KIND_PERSON", "person": {"given_name": "Eva"},
            "emails": [{"address": "eva@example.com"}]}}"#,
    );
    let survivor = other["customer"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &stack.addr(1),
        &format!("{PROFILE}/MergeCustomers"),
        &format!(r#"{{"survivor_customer_id": "{survivor}", "merged_customer_id": "{eve}"}}"#),
    );
    let started = Instant::now();
    loop {
        let t = call(
            &addr,
            &format!("{INTERACTIONS}/ListInteractions"),
            &format!(r#"{{"customer_id": "{survivor}"}}"#),
        );
        if t["interactions"].as_array().map_or(0, Vec::len) == 3 {
            assert_eq!(t["interactions"][0]["originalCustomerId"], eve.as_str());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the merge did not arrive: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stack.stop();
}
