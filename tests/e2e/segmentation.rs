//! The segmentation service through the gateway, driven by the real grpcurl
//! on a tenant filled by `rapport dev --demo` and valued by the valuation
//! service: the field catalogue, a live segment written in the rule language
//! (including a CLV condition fed by valuation's change feed), preview,
//! refresh, members, the explanation of one membership, the RFM report,
//! classification, the segment's value (valuation reading membership from
//! segmentation) and Customer 360 with segments and value. `buf curl` reads
//! the field catalogue too.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{DevStack, buf_curl, grpcurl_ok, grpcurl_run, http_get};

const SEG: &str = "rapport.segmentation.v1.SegmentationService";
const VAL: &str = "rapport.valuation.v1.ValuationService";

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => 0.0,
    }
}

#[test]
fn segments_rfm_classification_and_segment_value_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = DevStack::start(&dir.path().join("data"), &["--demo", "300"], &[]);
    stack.wait_for_line("Demo data", Duration::from_secs(240));
    assert!(
        stack.output.iter().any(|l| l.contains("Demo data ready")),
        "{:?}",
        stack.output.last()
    );
    let key = std::fs::read_to_string(stack.data_dir.join("dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());
    let gateway = stack.addr(0);
    let call = |method: &str, body: &str| -> Value {
        let out = grpcurl_ok(&[
            "-H",
            &auth,
            "-max-time",
            "120",
            "-d",
            body,
            &gateway,
            method,
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
    };

    // The catalogue, with grpcurl and with buf curl.
    let fields = call(&format!("{SEG}/ListFields"), "{}");
    let names: Vec<&str> = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for wanted in ["purchases", "clv", "rfm.segment", "ladder", "attr.tier"] {
        assert!(names.contains(&wanted), "{wanted} not in {names:?}");
    }
    let by_buf = buf_curl(&gateway, &format!("{SEG}/ListFields"), &auth, "{}");
    assert!(by_buf.contains("\"rfm.segment\""), "{by_buf}");

    // Value the tenant, so that CLV reaches segmentation over the feed.
    let now = support::utc_now_rfc3339();
    for kind in ["MODEL_KIND_BG_NBD", "MODEL_KIND_GAMMA_GAMMA"] {
        let fitted = call(
            &format!("{VAL}/FitModel"),
            &format!(
                r#"{{"kind": "{kind}", "calibration_end_time": "{now}", "period_unit": "PERIOD_UNIT_WEEK"}}"#
            ),
        );
        let id = fitted["model"]["modelId"].as_str().unwrap().to_string();
        call(
            &format!("{VAL}/ActivateModel"),
            &format!(r#"{{"model_id": "{id}"}}"#),
        );
    }
    call(
        &format!("{VAL}/ScoreCustomers"),
        r#"{"transaction_model_kind": "MODEL_KIND_BG_NBD", "horizon_periods": 52}"#,
    );

    // A rule in text form: preview it until valuation's feed has arrived.
    let rule = r#"purchases >= 2 and clv > 0 and (tags contains "newsletter" or attr.tier in ["gold", "platinum"])"#;
    let preview_body = serde_json::json!({"rule_text": rule, "sample_size": 5}).to_string();
    // Values arrive on the feed customer by customer: wait until the count
    // is settled.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = -1.0;
    let preview = loop {
        let p = call(&format!("{SEG}/PreviewSegment"), &preview_body);
        let n = number(&p["matchCount"]);
        if n > 0.0 && n == last {
            break p;
        }
        last = n;
        assert!(
            Instant::now() < deadline,
            "no settled match of {rule} 60 s after scoring: {p}"
        );
        std::thread::sleep(Duration::from_millis(1500));
    };
    assert_eq!(
        preview["ruleText"].as_str().unwrap(),
        rule,
        "canonical text"
    );

    let created = call(
        &format!("{SEG}/CreateSegment"),
        &serde_json::json!({"segment": {
            "name": "engaged repeat buyers", "kind": "SEGMENT_KIND_DYNAMIC",
            "marketing_approach": "MARKETING_APPROACH_DIFFERENTIATED", "rule_text": rule}})
        .to_string(),
    );
    let segment = created["segment"]["segmentId"]
        .as_str()
        .unwrap()
        .to_string();
    let refreshed = call(
        &format!("{SEG}/RefreshSegment"),
        &format!(r#"{{"segment_id": "{segment}"}}"#),
    );
    assert!(number(&refreshed["exitedCount"]) == 0.0, "{refreshed}");
    let metrics = http_get(stack.metrics_port, "/metrics");
    assert!(
        metrics.contains("rapport_segmentation_refresh_seconds_count{kind=\"dynamic\"} 1"),
        "segment refresh durations are measured:\n{metrics}"
    );
    let members = call(
        &format!("{SEG}/ListMembers"),
        &format!(r#"{{"segment_id": "{segment}", "page_size": 1000}}"#),
    );
    let members = members["members"].as_array().unwrap().clone();
    let matched = number(&call(&format!("{SEG}/PreviewSegment"), &preview_body)["matchCount"]);
    assert_eq!(members.len() as f64, matched, "members = preview count");
    let member = members[0]["customerId"].as_str().unwrap().to_string();

    // Why is this customer in it?
    let why = call(
        &format!("{SEG}/ExplainMembership"),
        &format!(r#"{{"customer_id": "{member}", "segment_id": "{segment}"}}"#),
    );
    assert_eq!(why["member"], true, "{why}");
    assert_eq!(why["ruleHeld"], true, "{why}");

    // RFM and classification.
    let rfm = call(&format!("{SEG}/GetRfmReport"), "{}");
    assert!(number(&rfm["scoredCustomerCount"]) >= 300.0, "{rfm}");
    let class = call(
        &format!("{SEG}/ClassifyCustomer"),
        &format!(r#"{{"customer_id": "{member}"}}"#),
    );
    let ladder = class["classification"]["ladderRung"].as_str().unwrap_or("");
    assert!(
        [
            "LADDER_RUNG_ACQUAINTANCE",
            "LADDER_RUNG_FRIEND",
            "LADDER_RUNG_PARTNER"
        ]
        .contains(&ladder),
        "a repeat buyer has climbed the ladder: {class}"
    );
    assert!(
        class["classification"]["ladderExplanation"]
            .as_array()
            .is_some_and(|l| l
                .iter()
                .any(|x| x.as_str().unwrap_or("").starts_with("result: "))),
        "{class}"
    );

    // The segment's value: valuation reads the membership from segmentation.
    let value = call(
        &format!("{VAL}/GetSegmentValue"),
        &format!(r#"{{"segment_id": "{segment}"}}"#),
    );
    assert_eq!(number(&value["memberCount"]), matched, "{value}");
    assert!(number(&value["totalClv"]["units"]) > 0.0, "{value}");

    // Customer 360 brings it all together.
    let c360 = call(
        "rapport.gateway.v1.Customer360Service/GetCustomer360",
        &format!(r#"{{"customer_id": "{member}", "max_interactions": 5}}"#),
    );
    let text = c360.to_string();
    assert!(text.contains(&segment), "the 360 lists the segment: {text}");
    assert!(text.contains("pAlive"), "the 360 carries the value: {text}");

    // A rule that does not parse says where.
    let bad = grpcurl_run(&[
        "-H",
        &auth,
        "-d",
        r#"{"rule_text": "purchases >= and clv > 5"}"#,
        &gateway,
        &format!("{SEG}/PreviewSegment"),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("line 1, column"), "{err}");
    stack.stop();
}
