//! `rapport bench --quick` end to end: every scenario runs against the real
//! services as separate processes, prints its tables, writes a JSON report
//! whose figures are present and plausible, and leaves no database behind.

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_bench_runs_every_scenario_and_writes_its_report() {
    let out_dir = tempfile::tempdir().expect("a temporary folder");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rapport"));
    cmd.args(["bench", "--quick", "--read-seconds", "1", "--out"])
        .arg(out_dir.path())
        .env_remove("RAPPORT_BENCH_DATABASE_URL");
    // On the suite's PostgreSQL when there is one (the bench makes and drops
    // a database of its own there), else on the bench's embedded one.
    let server = std::env::var("RAPPORT_TEST_DATABASE_URL").ok();
    if let Some(url) = &server {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd.output().expect("run rapport bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "rapport bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for title in [
        "Ingestion of 5,000 interactions",
        "Unary reads",
        "Segments, rule",
        "FitModel through the gateway",
        "Bulk identity: 2,000 customers",
        "GetNextBestActions through the gateway",
        "StreamNextBestActions through the gateway over a segment of 2000 members",
        "GetProfitabilityReport through the gateway over 5,000 customers",
        "Pricing a few customers",
        "Resident memory of each service",
    ] {
        assert!(stdout.contains(title), "no table {title:?} in:\n{stdout}");
    }

    let files: Vec<_> = std::fs::read_dir(out_dir.path())
        .expect("the output folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "one report: {files:?}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("read the report")).expect("JSON");
    let r = &report["results"];

    let ingest = &r["ingest"];
    assert_eq!(ingest["interactions"], 5000);
    for path in ["copy", "gateway", "direct"] {
        let rate = ingest[path]["per_second"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{path}: {ingest}");
    }
    // Small enough for the three feed consumers (segmentation, valuation,
    // engagement) to apply every event of both runs.
    let consumers = ingest["feed_consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 3, "{ingest}");
    for c in consumers {
        assert_eq!(c["events"], 10_000, "{c}");
        assert_eq!(c["applied"], 10_000, "{c}");
        assert!(c["caught_up_after_last_call_seconds"].is_number(), "{c}");
    }

    let engagement = &r["engagement"];
    for c in engagement["next_best_actions"].as_array().expect("calls") {
        assert!(c["p99_ms"].as_f64().unwrap_or(0.0) > 0.0, "{c}");
        assert_eq!(c["errors"], 0, "{c}");
    }
    for s in engagement["stream"].as_array().expect("streams") {
        assert_eq!(s["customers"], 2000, "{s}");
        assert!(s["actions"].as_i64().unwrap_or(0) > 0, "{s}");
    }

    let profit = &r["profitability"];
    assert_eq!(profit["customers"], 5000, "{profit}");
    for figure in [
        "baseline_seconds",
        "report_seconds",
        "customer_p50_ms",
        "rescore_batch_pricing_ms",
    ] {
        assert!(
            profit[figure].as_f64().unwrap_or(0.0) > 0.0,
            "{figure}: {profit}"
        );
    }
    assert!(
        profit["peak_customer_share"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s)),
        "{profit}"
    );

    let import = &r["import"];
    assert_eq!(import["customers"], 2000, "{import}");
    for path in ["copy", "import_direct", "import_gateway"] {
        let rate = import[path]["per_second"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{path}: {import}");
    }
    assert!(
        import["new_to_known_ratio"].as_f64().unwrap_or(0.0) > 0.0,
        "{import}"
    );

    let reads = r["reads"].as_array().expect("read results");
    assert_eq!(reads.len(), 4, "{reads:?}");
    for read in reads {
        assert_eq!(read["errors"], 0, "{read}");
        let (p50, p99) = (
            read["p50_ms"].as_f64().unwrap_or(-1.0),
            read["p99_ms"].as_f64().unwrap_or(-1.0),
        );
        assert!(p50 > 0.0 && p99 >= p50, "{read}");
        assert!(read["achieved_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    }

    let segments = &r["segments"]["sizes"][0];
    assert_eq!(segments["customers"], 2000);
    assert_eq!(
        segments["steps"].as_array().map(Vec::len),
        Some(4),
        "{segments}"
    );

    let fit = &r["fit"]["sizes"][0];
    let fits = fit["fits"].as_array().expect("fits");
    assert_eq!(fits.len(), 2, "{fit}");
    for f in fits {
        assert!(f["customers_in_fit"].as_i64().unwrap_or(0) >= 10, "{f}");
        assert_eq!(
            f["parameters"].as_array().map(|p| p.len() >= 3),
            Some(true),
            "{f}"
        );
    }
    assert_eq!(fit["exported_summaries"], 2000, "{fit}");

    let memory = r["memory"].as_object().expect("memory");
    for service in [
        "profile",
        "interaction",
        "segmentation",
        "valuation",
        "engagement",
        "gateway",
    ] {
        let rest = memory[service]["rest_kib"].as_u64().unwrap_or(0);
        let peak = memory[service]["ingest_peak_kib"].as_u64().unwrap_or(0);
        assert!(
            rest > 1000 && peak >= rest / 2,
            "{service}: {}",
            memory[service]
        );
    }

    // The bench's database is gone from the suite's server.
    if let Some(url) = server {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let left: i64 = runtime.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'rapport_bench_%'",
            )
            .fetch_one(&mut conn)
            .await
            .expect("count")
        });
        assert_eq!(left, 0, "the bench dropped its database");
    }
}

/// The soak CI runs: two minutes of mixed load through the gateway while a
/// service is killed every 30 s, PostgreSQL is restarted once and the
/// segmentation service's connections are cut once; the audit must find
/// nothing (the bench exits with an error otherwise).
#[test]
fn a_two_minute_soak_with_faults_loses_and_doubles_nothing() {
    let out_dir = tempfile::tempdir().expect("a temporary folder");
    // Its own embedded PostgreSQL: the soak restarts it.
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["bench", "soak", "--minutes", "2", "--out"])
        .arg(out_dir.path())
        .env_remove("RAPPORT_BENCH_DATABASE_URL")
        .output()
        .expect("run rapport bench soak");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the soak failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Audit") && !stdout.contains("FAILED"),
        "{stdout}"
    );
    let files: Vec<_> = std::fs::read_dir(out_dir.path())
        .expect("the output folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    let report: Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("read the report")).expect("JSON");
    let soak = &report["results"]["soak"];
    let faults: Vec<String> = soak["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .map(|f| f["fault"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        faults.iter().filter(|f| f.contains("SIGKILL")).count() >= 3,
        "{faults:?}"
    );
    assert!(
        faults.iter().any(|f| f == "PostgreSQL restarted"),
        "{faults:?}"
    );
    assert!(
        faults.iter().any(|f| f.contains("connections cut")),
        "{faults:?}"
    );
    let audit = soak["audit"].as_array().expect("audit");
    assert!(audit.len() >= 8, "{audit:?}");
    for check in audit {
        assert_eq!(check["problems"], 0, "{check}");
    }
    // Interactions were acknowledged for both tenants (the load ran).
    let answers = &soak["answers"];
    assert!(
        answers["RecordInteractions Ok"].as_u64().unwrap_or(0) > 20,
        "{answers}"
    );
}
