//! `rapport import` against `rapport dev`, with the sample files shipped in
//! examples/import: customers upserted by identifier, interactions recorded
//! for them, refused rows written to the rejects file with their line and
//! reason, a re-run that duplicates nothing, and a mapping file for columns
//! with other names. The results are read back with the real grpcurl.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{DevStack, grpcurl_ok, workspace};

fn import(stack: &DevStack, args: &[&str]) -> String {
    String::from_utf8_lossy(&against(stack, "import", args).stdout).into_owned()
}

/// Runs `rapport <command> <args>` against the stack with its development
/// key, asserting success.
fn against(stack: &DevStack, command: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg(command)
        .args(args)
        .args([
            "--gateway",
            &format!("http://{}", stack.addr(0)),
            "--data-dir",
        ])
        .arg(&stack.data_dir)
        .env_remove("RAPPORT_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("run rapport {command}: {e}"));
    assert!(
        out.status.success(),
        "rapport {command} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The numbers of the summary line.
fn numbers(out: &str) -> Vec<i64> {
    let line = out
        .lines()
        .find(|l| l.starts_with("Imported "))
        .unwrap_or_else(|| panic!("no summary in {out}"));
    let after = line.split_once(" s (").map_or(line, |(_, b)| b);
    let rows: i64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    let mut out = vec![rows];
    out.extend(
        after
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .skip(1)
            .filter_map(|s| s.parse::<i64>().ok()),
    );
    out
}

/// Runs `rapport import` with `args` (and no key in the environment),
/// expecting it to refuse: its exit code and standard error.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("import")
        .args(args)
        .env_remove("RAPPORT_API_KEY")
        .env_remove("RAPPORT_GATEWAY")
        .env_remove("RAPPORT_DATA_DIR")
        .output()
        .expect("run rapport import");
    assert!(
        !out.status.success(),
        "rapport import {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn rejects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn import_customers_and_interactions_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&dir.path().join("data"), &[], &[]);
    let key = std::fs::read_to_string(stack.data_dir.join("dev-api-key")).unwrap();
    let auth = format!("authorization: Bearer {}", key.trim());
    let samples = workspace().join("examples/import");
    let customers = dir.path().join("customers.csv");
    std::fs::copy(samples.join("customers.csv"), &customers).unwrap();
    let interactions = dir.path().join("interactions.csv");
    std::fs::copy(samples.join("interactions.csv"), &interactions).unwrap();

    // 5 rows: 4 created, the bad e-mail refused with its line.
    let out = import(&stack, &["customers", customers.to_str().unwrap()]);
    assert_eq!(numbers(&out), vec![5, 4, 0, 0, 1], "{out}");
    let r = rejects(&dir.path().join("customers.csv.rejects.jsonl"));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["line"], 5);
    assert_eq!(r[0]["reason"], "INVALID");
    assert_eq!(r[0]["row"]["email"], "not-an-email");
    assert_eq!(
        r[0]["field_violations"][0]["field"],
        "customer.emails[0].address"
    );

    // Again: every row answers as the first time (their request ids are
    // derived from the rows), and nothing is created twice.
    let out = import(&stack, &["customers", customers.to_str().unwrap()]);
    assert_eq!(numbers(&out), vec![5, 4, 0, 0, 1], "{out}");
    let count = || {
        let list = grpcurl_ok(&[
            "-H",
            &auth,
            "-d",
            r#"{"page_size": 100}"#,
            &stack.addr(0),
            "rapport.profile.v1.ProfileService/ListCustomers",
        ]);
        let list: Value = serde_json::from_str(&list).unwrap();
        list["customers"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(count(), 4);

    // A key the gateway does not know: refused, nothing imported.
    let eve = dir.path().join("eve.csv");
    std::fs::write(&eve, "email\neve@example.com\n").unwrap();
    let gateway = format!("http://{}", stack.addr(0));
    let (code, stderr) = refused(&[
        "customers",
        eve.to_str().unwrap(),
        "--gateway",
        &gateway,
        "--api-key",
        "rk_not_a_key",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains("refused the API key"),
        "{stderr}"
    );
    assert_eq!(count(), 4);

    // Interactions: 6 recorded (one for a new customer), one bad date
    // refused before sending; a re-run records nothing twice.
    let out = import(&stack, &["interactions", interactions.to_str().unwrap()]);
    assert_eq!(numbers(&out), vec![7, 6, 0, 1], "{out}");
    let r = rejects(&dir.path().join("interactions.csv.rejects.jsonl"));
    assert_eq!(r[0]["line"], 8, "{r:?}");
    let out = import(&stack, &["interactions", interactions.to_str().unwrap()]);
    assert_eq!(numbers(&out), vec![7, 0, 6, 1], "{out}");

    // Read back: Bo's survey and purchase, exactly.
    let found = grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        r#"{"identifiers": [{"kind": "IDENTIFIER_KIND_EMAIL", "value": "bo.berg@example.com"}], "lookup_only": true}"#,
        &stack.addr(0),
        "rapport.profile.v1.ProfileService/ResolveIdentity",
    ]);
    let found: Value = serde_json::from_str(&found).unwrap();
    let bo = found["resolved"]["customer"]["customerId"]
        .as_str()
        .unwrap();
    let summary = grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        &format!(r#"{{"customer_id": "{bo}"}}"#),
        &stack.addr(0),
        "rapport.interaction.v1.InteractionService/GetCustomerSummary",
    ]);
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["summary"]["latestCsat"], 2, "{summary}");
    assert_eq!(summary["summary"]["latestNps"], 3, "{summary}");

    // A file with other column names, through a mapping file: Bo's tags
    // are set and Dana is new.
    let export = dir.path().join("export.csv");
    std::fs::write(
        &export,
        "E-mail Address,First Name,Last Name,Labels\nbo.berg@example.com,Bo,Berg,newsletter;vip\ndana@example.com,Dana,Diaz,\n",
    )
    .unwrap();
    let out = import(
        &stack,
        &[
            "customers",
            export.to_str().unwrap(),
            "--mapping",
            samples.join("crm-export.mapping").to_str().unwrap(),
        ],
    );
    assert_eq!(numbers(&out), vec![2, 1, 1, 0, 0], "{out}");
    assert_eq!(count(), 6, "4 imported, 1 from an interaction, Dana");

    // And out again with `rapport export`: JSON Lines on standard output,
    // CSV to a file, each item read back.
    let customers: Vec<Value> = export_lines(&stack, &["customers"]);
    assert_eq!(customers.len(), 6);
    let bo_json = customers
        .iter()
        .find(|c| c["customerId"] == bo)
        .expect("Bo is exported");
    assert_eq!(bo_json["emails"][0]["address"], "bo.berg@example.com");
    assert_eq!(bo_json["tags"], serde_json::json!(["newsletter", "vip"]));
    let csv_file = dir.path().join("customers-out.csv");
    export_cli(&stack, &["customers", "-o", csv_file.to_str().unwrap()]);
    let mut rows = csv::Reader::from_path(&csv_file).unwrap();
    let headers = rows.headers().unwrap().clone();
    assert_eq!(&headers[0], "customer_id");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6);
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let bo_row = rows.iter().find(|r| &r[0] == bo).expect("Bo's row");
    assert_eq!(&bo_row[column("email")], "bo.berg@example.com");
    assert_eq!(&bo_row[column("tags")], "newsletter;vip");
    assert_eq!(&bo_row[column("given_name")], "Bo");

    let exported: Vec<Value> = export_lines(&stack, &["interactions"]);
    assert_eq!(exported.len(), 6, "every recorded interaction, once");
    let ids: std::collections::HashSet<&str> = customers
        .iter()
        .map(|c| c["customerId"].as_str().unwrap())
        .collect();
    assert!(
        exported
            .iter()
            .all(|i| ids.contains(i["customerId"].as_str().unwrap()))
    );
    assert_eq!(
        exported.iter().filter(|i| i["customerId"] == bo).count(),
        2,
        "Bo's survey and purchase"
    );

    // The members of a static segment.
    let segment = grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        r#"{"segment": {"name": "exported", "kind": "SEGMENT_KIND_STATIC"}}"#,
        &stack.addr(0),
        "rapport.segmentation.v1.SegmentationService/CreateSegment",
    ]);
    let segment: Value = serde_json::from_str(&segment).unwrap();
    let segment = segment["segment"]["segmentId"]
        .as_str()
        .unwrap()
        .to_string();
    let added = support::grpcurl_run(&[
        "-H",
        &auth,
        "-d",
        &format!(r#"{{"segment_id": "{segment}", "customer_ids": ["{bo}"]}}"#),
        &stack.addr(0),
        "rapport.segmentation.v1.SegmentationService/AddMembers",
    ]);
    assert!(added.status.success(), "{added:?}");
    let members = export_lines(&stack, &["segment-members", &segment]);
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["customerId"], bo);
    // A segment id that is not one: refused with the field named.
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["export", "segment-members", "not-a-uuid", "--gateway"])
        .arg(format!("http://{}", stack.addr(0)))
        .arg("--data-dir")
        .arg(&stack.data_dir)
        .env_remove("RAPPORT_API_KEY")
        .output()
        .expect("run rapport export");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ListMembers") && stderr.contains("segment_id"),
        "{stderr}"
    );
    stack.stop();
}

/// Runs `rapport export` against the stack; its standard output.
fn export_cli(stack: &DevStack, args: &[&str]) -> String {
    let out = against(stack, "export", args);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exported"),
        "{out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The JSON Lines `rapport export` writes on standard output.
fn export_lines(stack: &DevStack, args: &[&str]) -> Vec<Value> {
    export_cli(stack, args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Bad input to the command itself: each case exits non-zero with a message
/// that names what to fix, before anything is sent (the gateway given is
/// unreachable, so a case that got as far as sending would say so instead),
/// and writes no rejects file.
#[test]
fn bad_input_to_the_command_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, "email,given_name\nana@example.com,Ana\n").unwrap();
    let bad_mapping = dir.path().join("bad.mapping");
    std::fs::write(&bad_mapping, "# a comment\nemail\n").unwrap();
    let f = file.to_str().unwrap();
    let missing = dir.path().join("missing.csv");
    let no_data = dir.path().join("no-data");
    let offline = ["--gateway", "http://127.0.0.1:1", "--api-key", "k"];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["customers", missing.to_str().unwrap()],
            1,
            "cannot open",
        ),
        (
            vec!["customers", f, "--map", "nosuch=col"],
            1,
            "unknown field \"nosuch\"",
        ),
        (
            vec!["customers", f, "--map", "email"],
            2,
            "is not field=column",
        ),
        (
            vec!["customers", f, "--mapping", missing.to_str().unwrap()],
            1,
            "cannot read the mapping file",
        ),
        (
            vec!["customers", f, "--mapping", bad_mapping.to_str().unwrap()],
            1,
            "line 2: \"email\" is not field=column",
        ),
        (
            vec!["customers", f, "--rows-per-call", "0"],
            1,
            "--rows-per-call must be at least 1",
        ),
        (
            vec!["customers", f, "--format", "xml"],
            2,
            "possible values: csv, jsonl",
        ),
        (
            vec!["customers", f, "--kind", "robot"],
            2,
            "possible values: person, organization",
        ),
        (
            vec!["interactions", f, "--currency", "EURO"],
            1,
            "--currency must be a three-letter",
        ),
        (
            vec!["interactions", f, "--currency", "€"],
            1,
            "--currency must be a three-letter",
        ),
        (
            vec![
                "customers",
                f,
                "--api-key",
                "",
                "--data-dir",
                no_data.to_str().unwrap(),
            ],
            1,
            "no --api-key given and no development key",
        ),
        (
            vec!["customers", f, "--gateway", "not a url", "--api-key", "k"],
            1,
            "not a url",
        ),
        (
            vec!["customers", f],
            1,
            "cannot reach the gateway at http://127.0.0.1:1",
        ),
        (vec!["nothing", f], 2, "unrecognized subcommand"),
    ];
    for (args, code, says) in cases {
        let mut all = args.clone();
        // Every case also names an unreachable gateway and a key, unless it
        // is about them.
        if !args.contains(&"--gateway") {
            all.extend(&offline[..2]);
        }
        if !args.contains(&"--api-key") {
            all.extend(&offline[2..]);
        }
        let (got, stderr) = refused(&all);
        assert_eq!(got, code, "{all:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{all:?}: expected {says:?} in {stderr}"
        );
    }
    assert!(
        !dir.path().join("customers.csv.rejects.jsonl").exists(),
        "a refused command wrote rejects"
    );
}
