//! Fits BG/NBD and Gamma-Gamma on a synthetic customer base drawn from the
//! BG/NBD process with known parameters, and prints how long each fit takes
//! and how close it comes to the truth. Then fits the same data with the
//! `lifetimes` package (0.11.3, installed into a virtual environment of the
//! bench's own under the target directory on first use) in the same run and
//! prints the ratio.
//!
//!     cargo bench -p rapport-valuation --bench fit
//!     RAPPORT_BENCH_CUSTOMERS=100000 cargo bench -p rapport-valuation --bench fit
//!
//! Figures, not assertions.

use std::io::Write;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rapport_valuation::domain::bgnbd::BgNbd;
use rapport_valuation::domain::fitting::{self, FitCase, Kind};
use rapport_valuation::domain::gamma_gamma::GammaGamma;
use rapport_valuation::domain::synthetic::BgNbdGenerator;
use rapport_valuation::domain::{RfmData, SpendData};

fn main() {
    let n: usize = std::env::var("RAPPORT_BENCH_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let truth = BgNbd {
        r: 0.25,
        alpha: 4.0,
        a: 0.8,
        b: 2.5,
    };
    let spend_truth = GammaGamma {
        p: 6.0,
        q: 4.0,
        gamma: 15.0,
    };
    // Weeks as the unit, day resolution, acquisition spread over a year.
    let generator =
        BgNbdGenerator::new(truth, Some(spend_truth), 1.0 / 7.0).expect("valid parameters");
    let mut rng = StdRng::seed_from_u64(2005);
    let started = Instant::now();
    let customers: Vec<_> = (0..n)
        .map(|i| generator.draw(&mut rng, 1.0 + (i % 52) as f64))
        .collect();
    let generated = started.elapsed();

    // What FitModel runs on the exported summaries: pooling, the search,
    // the Newton polish and the standard errors.
    let cases: Vec<FitCase> = customers
        .iter()
        .map(|c| FitCase {
            frequency: c.observation.frequency as i64,
            recency: c.observation.recency,
            t: c.observation.age,
            monetary_value: c.mean_spend.unwrap_or(0.0),
            in_currency: true,
            holdout_purchases: 0,
            opportunities: None,
            holdout_opportunities: (0, 0),
        })
        .collect();
    let started = Instant::now();
    let data = RfmData::new(customers.iter().map(|c| c.observation));
    let spend = SpendData::new(
        customers
            .iter()
            .filter_map(|c| c.mean_spend.map(|m| (c.observation.frequency, m)))
            .collect(),
    );
    let pooled = started.elapsed();

    let started = Instant::now();
    let bg = fitting::fit(Kind::BgNbd, &cases, 10_000, None, "EUR").expect("BG/NBD fit");
    let bg_time = started.elapsed();
    let started = Instant::now();
    let gg = fitting::fit(Kind::GammaGamma, &cases, 10_000, None, "EUR").expect("Gamma-Gamma fit");
    let gg_time = started.elapsed();

    println!(
        "valuation model fit — {n} synthetic customers ({} distinct histories, {} repeat buyers)",
        data.rows.len(),
        spend.rows().len()
    );
    println!(
        "  machine: {} cores",
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    println!(
        "  draw {:>8.2} s   pool {:>6.2} s",
        generated.as_secs_f64(),
        pooled.as_secs_f64()
    );
    println!(
        "  {:<12} {:>8} {:>10} {:>10}",
        "model", "time s", "iterations", "LL"
    );
    println!(
        "  {:<12} {:>8.2} {:>10} {:>10.1}",
        "BG/NBD",
        bg_time.as_secs_f64(),
        bg.iterations,
        bg.log_likelihood
    );
    println!(
        "  {:<12} {:>8.2} {:>10} {:>10.1}",
        "Gamma-Gamma",
        gg_time.as_secs_f64(),
        gg.iterations,
        gg.log_likelihood
    );
    println!(
        "  total fit {:.2} s (target: under 5 s on 2 cores at 1,000,000 customers)",
        (bg_time + gg_time).as_secs_f64()
    );
    println!("  parameter   truth   fitted   std.err");
    let truths = truth.to_vec().into_iter().chain(spend_truth.to_vec());
    for ((name, fitted, se), truth) in bg.parameters.iter().chain(&gg.parameters).zip(truths) {
        let se = se.map_or("-".to_string(), |s| format!("{s:.4}"));
        println!("  {name:<10} {truth:>7.3} {fitted:>8.4} {se:>9}");
    }

    compare_with_lifetimes(&customers, (bg_time + gg_time).as_secs_f64());
}

/// Fits the same data with the `lifetimes` package when Python has it.
fn compare_with_lifetimes(
    customers: &[rapport_valuation::domain::synthetic::SyntheticCustomer],
    ours: f64,
) {
    let python = match lifetimes_python() {
        Ok(p) => p,
        Err(why) => {
            println!("  lifetimes: {why} — no ratio this run");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("rapport-fit-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let csv = dir.join("customers.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("write data"));
    let _ = writeln!(f, "frequency,recency,T,monetary_value");
    for c in customers {
        let o = c.observation;
        let _ = writeln!(
            f,
            "{},{},{},{}",
            o.frequency,
            o.recency,
            o.age,
            c.mean_spend.unwrap_or(0.0)
        );
    }
    drop(f);
    let script = r#"
import sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
d = pd.read_csv(sys.argv[1])
t = time.time()
BetaGeoFitter().fit(d["frequency"], d["recency"], d["T"])
r = d[d["frequency"] > 0]
GammaGammaFitter().fit(r["frequency"], r["monetary_value"])
print(time.time() - t)
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&csv)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(o) if o.status.success() => {
            let theirs: f64 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            println!(
                "  lifetimes 0.11 on the same data: {theirs:.2} s — Rapport is {:.1}x faster",
                theirs / ours
            );
        }
        Ok(o) => println!(
            "  lifetimes failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("  lifetimes could not run: {e}"),
    }
}

/// The Python of the bench's own virtual environment with `lifetimes`
/// 0.11.3, made on first use under the target directory.
fn lifetimes_python() -> Result<std::path::PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("bench-lifetimes");
    let python = venv.join("bin").join("python");
    let imports = |p: &std::path::Path| {
        std::process::Command::new(p)
            .args(["-c", "import lifetimes"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports(&python) {
        return Ok(python);
    }
    let run = |program: &std::path::Path, args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
                .to_string())
        }
    };
    let venv_arg = venv.to_string_lossy().to_string();
    run(std::path::Path::new("python3"), &["-m", "venv", &venv_arg])
        .map_err(|e| format!("no virtual environment (python3-venv installed?): {e}"))?;
    let pip = venv.join("bin").join("pip");
    run(&pip, &["install", "--quiet", "lifetimes==0.11.3"])
        .map_err(|e| format!("pip install lifetimes failed: {e}"))?;
    if imports(&python) {
        Ok(python)
    } else {
        Err("installed but not importable".into())
    }
}
