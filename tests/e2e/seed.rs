//! `rapport seed` against `rapport dev`: it fills the development tenant
//! through the gateway with the development key, the result can be read back
//! with grpcurl, and a second run with the same seed changes nothing.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{DevStack, grpcurl_ok, http_get};

fn seed(stack: &DevStack) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args([
            "seed",
            "--customers",
            "60",
            "--seed",
            "7",
            "--as-of",
            "2026-06-01T00:00:00Z",
            "--gateway",
            &format!("http://{}", stack.addr(0)),
            "--data-dir",
        ])
        .arg(&stack.data_dir)
        .env_remove("RAPPORT_API_KEY")
        .output()
        .expect("run rapport seed");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "rapport seed failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// "Seeded 60 customers and A interactions (D already there, R refused)".
/// Customers of a profitability report in a ladder rung group other than
/// "unclassified".
fn classified(report: &Value) -> i64 {
    report["breakdowns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["dimension"] == "PROFIT_DIMENSION_LADDER_RUNG")
        .flat_map(|b| b["groups"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["key"] != "unclassified")
        .map(|g| int(&g["customers"]))
        .sum()
}

/// An int64 of the JSON mapping (a string), or 0 when absent.
fn int(v: &Value) -> i64 {
    v.as_str()
        .and_then(|n| n.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or(0)
}

fn counts(out: &str) -> (i64, i64, i64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("Seeded "))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let numbers: Vec<i64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(numbers[0], 60, "{line}");
    (numbers[1], numbers[2], numbers[3])
}

#[test]
fn seed_fills_the_dev_tenant_deterministically_and_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let key = std::fs::read_to_string(stack.data_dir.join("dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());

    let (accepted, duplicate, refused) = counts(&seed(&stack));
    assert!(accepted > 100, "{accepted} interactions");
    assert_eq!((duplicate, refused), (0, 0));

    // The customers are there, with their histories.
    let list = |token: &str| -> Value {
        let out = grpcurl_ok(&[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"page_size": 1000, "page_token": "{token}"}}"#),
            &stack.addr(0),
            "rapport.profile.v1.ProfileService/ListCustomers",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let customers = list("");
    let all = customers["customers"].as_array().unwrap();
    assert_eq!(all.len(), 60);
    let mut buyers = 0;
    for c in all.iter().take(10) {
        let id = c["customerId"].as_str().unwrap();
        assert!(c["attributes"]["tier"]["stringValue"].is_string(), "{c}");
        let out = grpcurl_ok(&[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"customer_id": "{id}", "as_of": "2026-06-01T00:00:00Z"}}"#),
            &stack.addr(0),
            "rapport.interaction.v1.InteractionService/GetCustomerSummary",
        ]);
        let summary: Value = serde_json::from_str(&out).unwrap();
        if summary["summary"]["purchaseCount"]
            .as_str()
            .is_some_and(|n| n != "0")
            || summary["summary"]["purchaseCount"]
                .as_i64()
                .is_some_and(|n| n > 0)
        {
            buyers += 1;
        }
    }
    assert_eq!(buyers, 10, "every seeded customer has bought at least once");

    // The engagement part: six treatments, and decisions with some outcomes.
    let engagement = |method: &str, body: &str| -> Value {
        let out = grpcurl_ok(&[
            "-H",
            &auth,
            "-d",
            body,
            &stack.addr(0),
            &format!("rapport.engagement.v1.EngagementService/{method}"),
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let treatments = engagement("ListTreatments", "{}");
    assert_eq!(
        treatments["treatments"].as_array().map(Vec::len),
        Some(6),
        "{treatments}"
    );
    let decisions = |outcome: &str| {
        engagement(
            "ListDecisions",
            &format!(r#"{{"page_size": 1000, "outcome": "{outcome}"}}"#),
        )["decisions"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let made = decisions("OUTCOME_UNSPECIFIED");
    assert!(
        made >= 12,
        "decisions for every fifth of 60 customers: {made}"
    );
    assert!(decisions("OUTCOME_ACCEPTED") + decisions("OUTCOME_DECLINED") > 0);

    // The cost model, and the whale curve of the year before --as-of once
    // valuation has priced every interaction the feed brings.
    let valuation = |method: &str, body: &str| -> Value {
        let out = grpcurl_ok(&[
            "-H",
            &auth,
            "-d",
            body,
            &stack.addr(0),
            &format!("rapport.valuation.v1.ValuationService/{method}"),
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let model = valuation("GetCostModel", "{}");
    assert_eq!(model["costModel"]["version"], 1, "{model}");
    assert_eq!(model["costModel"]["currencyCode"], "EUR", "{model}");
    let window = r#"{"start_time": "2025-06-01T00:00:00Z", "end_time": "2026-06-01T00:00:00Z",
                     "curve_intervals": 10, "destroyer_count": 3}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let report = loop {
        let r = valuation("GetProfitabilityReport", window)["report"].clone();
        if (int(&r["customerCount"]) == 60 && classified(&r) > 0)
            || std::time::Instant::now() > deadline
        {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(int(&report["customerCount"]), 60, "{report}");
    // Rungs come from segmentation's feed: classified customers are grouped.
    assert!(classified(&report) > 0, "{report}");
    assert_eq!(report["whaleCurve"].as_array().map(Vec::len), Some(11));
    assert_eq!(report["valueDestroyers"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["costs"].as_array().map(Vec::len), Some(6));
    assert!(
        int(&report["total"]["costToServe"]["units"]) > 0,
        "{report}"
    );
    let peak: f64 = report["peak"]["customerShare"].as_f64().unwrap_or(0.0);
    assert!((0.0..=1.0).contains(&peak), "{report}");

    // A second run with the same seed finds everything already there, even
    // with the key held to 20 calls/s: the seed waits out each refusal for
    // the delay the gateway names, as a well-behaved client does.
    let tenants: Value = serde_json::from_str(&grpcurl_ok(&[
        "-H",
        &auth,
        &stack.addr(0),
        "rapport.gateway.v1.AdminService/ListTenants",
    ]))
    .unwrap();
    let tenant = tenants["tenants"][0]["tenantId"].as_str().unwrap();
    grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        &format!(
            r#"{{"tenant": {{"tenant_id": "{tenant}", "rate_limit": {{"requests_per_second": 20, "burst": 5}}}},
                "update_mask": {{"paths": ["rate_limit"]}}}}"#
        ),
        &stack.addr(0),
        "rapport.gateway.v1.AdminService/UpdateTenant",
    ]);
    // New limits apply to the tenant's keys within 5 s (UpdateTenant's contract).
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (again, duplicate, refused) = counts(&seed(&stack));
    assert_eq!((again, refused), (0, 0));
    assert_eq!(duplicate, accepted);
    // The key's bucket refills (burst 5 at 20 calls/s) before the next call.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(list("")["customers"].as_array().unwrap().len(), 60);
    assert_eq!(
        decisions("OUTCOME_UNSPECIFIED"),
        made,
        "a second run adds no decision"
    );

    // Operators see the ingestion by outcome.
    let metrics = http_get(stack.metrics_port, "/metrics");
    for outcome in ["accepted", "duplicate"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "rapport_interaction_ingested_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no {outcome} count in:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= accepted as f64 - 1.0, "{line}");
    }
    stack.stop();
}

#[test]
fn dev_demo_fills_the_tenant_once_the_stack_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = DevStack::start(&dir.path().join("data"), &["--demo", "25"], &[]);
    stack.wait_for_line("Demo data", std::time::Duration::from_secs(120));
    let line = stack
        .output
        .iter()
        .find(|l| l.contains("Demo data ready"))
        .cloned()
        .unwrap_or_default();
    assert!(line.contains("25 customers"), "{line}");
    stack.stop();
}
