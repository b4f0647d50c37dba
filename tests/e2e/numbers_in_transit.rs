//! Numbers survive every service line. A survey with CSAT 2 and NPS 3 and a
//! purchase of EUR 10.50 are recorded through the gateway with the real
//! grpcurl; the interaction service's typed change feed carries them to
//! segmentation (features, rules, RFM, classification) and valuation (its
//! purchase projection, read back through the cohort report), each checked
//! to the cent and to the point. Before typed events, feed payloads were
//! `google.protobuf.Struct`s whose numbers were all doubles: CSAT and NPS
//! were lost and the cents dropped (`monetary > 10.2` matched nobody).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DevStack, grpcurl_ok};

const INTERACTIONS: &str = "rapport.interaction.v1.InteractionService";
const SEG: &str = "rapport.segmentation.v1.SegmentationService";
const VAL: &str = "rapport.valuation.v1.ValuationService";

#[test]
fn csat_nps_and_cents_reach_segmentation_and_valuation_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let key = std::fs::read_to_string(stack.data_dir.join("dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());
    let gateway = stack.addr(0);
    let call = |method: &str, body: &str| -> Value {
        let out = grpcurl_ok(&["-H", &auth, "-d", body, &gateway, method]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
    };

    // A new customer's purchase of EUR 10.50, then a survey answer.
    let purchase = r#"{"interaction": {
        "customer": {"identifiers": {"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "cents@example.com"}]}},
        "type": "INTERACTION_TYPE_PURCHASE", "occur_time": "2025-03-02T10:00:00Z",
        "channel": "CHANNEL_WEB", "amount": {"currency_code": "EUR", "units": "10", "nanos": 500000000},
        "margin": {"currency_code": "EUR", "units": "3", "nanos": 250000000},
        "idempotency_key": "numbers:order-1"}}"#;
    let recorded = call(&format!("{INTERACTIONS}/RecordInteraction"), purchase);
    let customer = recorded["interaction"]["customerId"]
        .as_str()
        .unwrap()
        .to_string();
    let survey = format!(
        r#"{{"interaction": {{"customer": {{"customer_id": "{customer}"}},
            "type": "INTERACTION_TYPE_SURVEY_RESPONSE", "occur_time": "2025-03-05T10:00:00Z",
            "channel": "CHANNEL_EMAIL", "survey": {{"csat": 2, "nps": 3}},
            "idempotency_key": "numbers:survey-1"}}}}"#
    );
    call(&format!("{INTERACTIONS}/RecordInteraction"), &survey);
    let summary = call(
        &format!("{INTERACTIONS}/GetCustomerSummary"),
        &format!(r#"{{"customer_id": "{customer}"}}"#),
    );
    assert_eq!(summary["summary"]["latestCsat"], 2, "{summary}");
    assert_eq!(summary["summary"]["latestNps"], 3, "{summary}");

    // Segmentation: rules on CSAT, NPS and the exact amount match the
    // customer as soon as the feed has arrived (and nothing looser does).
    let count = |rule: &str| -> i64 {
        let body = serde_json::json!({"rule_text": rule, "sample_size": 1}).to_string();
        let p = call(&format!("{SEG}/PreviewSegment"), &body);
        match &p["matchCount"] {
            Value::String(s) => s.parse().unwrap(),
            Value::Number(n) => n.as_i64().unwrap(),
            _ => 0,
        }
    };
    let exact = "csat <= 2 and csat >= 2 and nps <= 3 and nps >= 3 \
                 and monetary > 10.49 and monetary < 10.51 and monetary > 10.2";
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(exact) != 1 {
        assert!(
            Instant::now() < deadline,
            "segmentation never saw CSAT 2, NPS 3 and EUR 10.50 exactly: \
             csat <= 2 -> {}, nps <= 6 -> {}, monetary > 10.2 -> {}, monetary >= 10 -> {}",
            count("csat <= 2"),
            count("nps <= 6"),
            count("monetary > 10.2"),
            count("monetary >= 10"),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(count("csat <= 1"), 0);
    assert_eq!(count("nps >= 4"), 0);
    assert_eq!(count("monetary >= 10.51"), 0);

    // Classification and RFM use the same figures.
    let class = call(
        &format!("{SEG}/ClassifyCustomer"),
        &format!(r#"{{"customer_id": "{customer}"}}"#),
    );
    let lines: Vec<&str> = class["classification"]["ladderExplanation"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("latest CSAT 2 ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("latest NPS 3 ")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("unknown")), "{lines:?}");
    let monetary = &class["classification"]["rfm"]["monetary"];
    assert_eq!(monetary["currencyCode"], "EUR", "{class}");
    assert_eq!(monetary["units"], "10", "{class}");
    assert_eq!(monetary["nanos"], 500000000, "{class}");

    // Valuation: its purchase projection (the cohort report's data) holds
    // EUR 10.50 for the March 2025 cohort.
    let deadline = Instant::now() + Duration::from_secs(60);
    let revenue = loop {
        let report = call(
            &format!("{VAL}/GetCohortReport"),
            r#"{"start_time": "2025-01-01T00:00:00Z", "end_time": "2025-06-01T00:00:00Z", "currency_code": "EUR"}"#,
        );
        let march = report["cohorts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["cohort"] == "2025-03")
            .cloned();
        if let Some(m) = march.filter(|m| m["customerCount"] == "1") {
            break m["revenue"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "valuation never saw the purchase"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(revenue["currencyCode"], "EUR", "{revenue}");
    assert_eq!(revenue["units"], "10", "{revenue}");
    assert_eq!(revenue["nanos"], 500000000, "{revenue}");
    stack.stop();
}
