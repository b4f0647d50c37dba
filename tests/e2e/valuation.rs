//! The valuation service through the gateway, driven by the real grpcurl on a
//! tenant filled by `rapport dev --demo` (BG/NBD purchase histories with
//! Gamma-Gamma spend, sent through the public APIs): fit both models from
//! the interaction service's export, activate them, score every customer,
//! and read values, rankings, value concentration and the cohort report back.

mod support;

use serde_json::Value;
use support::{DevStack, grpcurl_ok, grpcurl_run, http_get};

const SERVICE: &str = "rapport.valuation.v1.ValuationService";

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

#[test]
fn fit_score_and_read_values_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = DevStack::start(&dir.path().join("data"), &["--demo", "400"], &[]);
    stack.wait_for_line("Demo data", std::time::Duration::from_secs(240));
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
            &format!("{SERVICE}/{method}"),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} answered {out:?}: {e}"))
    };

    // The gateway lists the service.
    let listed = grpcurl_ok(&["-H", &auth, &gateway, "list"]);
    assert!(listed.lines().any(|l| l == SERVICE), "{listed}");

    let now = support::utc_now_rfc3339();
    let mut models = Vec::new();
    // Gamma-Gamma is fitted on repeat customers only.
    for (kind, at_least) in [
        ("MODEL_KIND_BG_NBD", 400.0),
        ("MODEL_KIND_GAMMA_GAMMA", 60.0),
    ] {
        let fitted = call(
            "FitModel",
            &format!(
                r#"{{"kind": "{kind}", "calibration_end_time": "{now}", "period_unit": "PERIOD_UNIT_WEEK"}}"#
            ),
        );
        let model = &fitted["model"];
        assert!(
            number(&model["customerCount"]) >= at_least,
            "{kind} fitted on the demo tenant: {model}"
        );
        let params = model["parameters"].as_array().unwrap();
        assert!(params.iter().all(|p| number(&p["value"]) > 0.0), "{model}");
        models.push(model["modelId"].as_str().unwrap().to_string());
    }
    for id in &models {
        let activated = call("ActivateModel", &format!(r#"{{"model_id": "{id}"}}"#));
        assert_eq!(activated["model"]["active"], true, "{activated}");
    }

    let scored = call(
        "ScoreCustomers",
        r#"{"transaction_model_kind": "MODEL_KIND_BG_NBD", "horizon_periods": 52}"#,
    );
    assert!(number(&scored["scoredCustomerCount"]) >= 400.0, "{scored}");

    let ranked = call(
        "RankCustomers",
        r#"{"metric": "RANK_METRIC_CLV", "top_n": 10, "page_size": 10}"#,
    );
    let top = ranked["customers"].as_array().unwrap();
    assert_eq!(top.len(), 10, "{ranked}");
    let best = top[0]["value"]["customerId"].as_str().unwrap().to_string();

    // `rapport export values`: every scored customer, in rank order, as CSV.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["export", "values", "--format", "csv", "--gateway"])
        .arg(format!("http://{gateway}"))
        .arg("--data-dir")
        .arg(&stack.data_dir)
        .env_remove("RAPPORT_API_KEY")
        .output()
        .expect("run rapport export");
    assert!(out.status.success(), "{out:?}");
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as f64, number(&scored["scoredCustomerCount"]));
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][column("rank")], "1");
    assert_eq!(&rows[0][column("customer_id")], best.as_str());
    assert_eq!(
        &rows[0][column("clv_units")],
        top[0]["value"]["clv"]["units"].as_str().unwrap()
    );
    assert_eq!(&rows[9][column("rank")], "10");

    let value = call(
        "GetCustomerValue",
        &format!(r#"{{"customer_id": "{best}"}}"#),
    );
    let v = &value["value"];
    let p_alive = number(&v["pAlive"]);
    assert!((0.0..=1.0).contains(&p_alive), "{v}");
    assert!(
        number(&v["clv"]["units"]) > 0.0,
        "the best customer has a CLV: {v}"
    );

    // The same customer a week ago, scored with the same run's models.
    let week_ago = support::utc_rfc3339_days_ago(7);
    let then = call(
        "GetCustomerValue",
        &format!(r#"{{"customer_id": "{best}", "as_of": "{week_ago}"}}"#),
    );
    assert_eq!(then["value"]["scoreTime"], week_ago.as_str(), "{then}");
    assert!(number(&then["value"]["t"]) < number(&v["t"]), "{then}");

    // The README's comparison: three transaction models on a 12-week
    // holdout, one recommended with its reason.
    let twelve_weeks_ago = support::utc_rfc3339_days_ago(84);
    let compared = call(
        "CompareModels",
        &format!(
            r#"{{"calibration_end_time": "{twelve_weeks_ago}", "holdout_end_time": "{now}", "period_unit": "PERIOD_UNIT_WEEK"}}"#
        ),
    );
    assert_eq!(
        compared["models"].as_array().unwrap().len(),
        3,
        "{compared}"
    );
    assert!(
        compared["recommendationReason"]
            .as_str()
            .unwrap()
            .starts_with("closest conditional expectations on the holdout"),
        "{compared}"
    );
    let annual = call(
        "ScoreCustomers",
        r#"{"annual_discount_rate": 0.12, "horizon_periods": 52}"#,
    );
    assert!(
        (number(&annual["settings"]["annualDiscountRate"]) - 0.12).abs() < 1e-9,
        "{annual}"
    );

    let concentration = call("GetValueConcentration", r#"{"lorenz_intervals": 10}"#);
    assert!(
        number(&concentration["customerCount"]) >= 400.0,
        "{concentration}"
    );

    let cohorts = call(
        "GetCohortReport",
        r#"{"granularity": "COHORT_GRANULARITY_QUARTER"}"#,
    );
    let rows = cohorts["cohorts"].as_array().unwrap();
    assert!(
        rows.len() >= 8,
        "three years of quarterly cohorts: {cohorts}"
    );
    let customers: f64 = rows.iter().map(|r| number(&r["customerCount"])).sum();
    assert!(customers >= 400.0, "every buyer is in a cohort: {cohorts}");

    // Operators see fit and scoring durations.
    let metrics = http_get(stack.metrics_port, "/metrics");
    for wanted in [
        "rapport_valuation_model_fit_seconds_count{kind=\"MODEL_KIND_BG_NBD\"} 1",
        "rapport_valuation_model_fit_seconds_count{kind=\"MODEL_KIND_GAMMA_GAMMA\"} 1",
        "rapport_valuation_score_run_seconds_count 2",
    ] {
        assert!(
            metrics.contains(wanted),
            "{wanted} missing from:\n{metrics}"
        );
    }

    // Bad input is refused with the field named.
    let bad = grpcurl_run(&[
        "-H",
        &auth,
        "-d",
        r#"{"kind": "MODEL_KIND_BG_NBD", "period_unit": "PERIOD_UNIT_WEEK"}"#,
        &gateway,
        &format!("{SERVICE}/FitModel"),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("InvalidArgument"), "{err}");
    stack.stop();
}
