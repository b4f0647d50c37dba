//! `rapport dev` as a new user runs it, driven by the real grpcurl.

mod support;

use std::time::Duration;

use support::{DevStack, grpcurl_ok, grpcurl_run};

const SERVICE_NAMES: [&str; 6] = [
    "gateway",
    "profile",
    "interaction",
    "segmentation",
    "valuation",
    "engagement",
];

#[test]
fn dev_stack_serves_health_and_reflection_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stack = DevStack::start(&data, &[], &[]);

    // The banner names every endpoint and a ready-to-paste grpcurl command.
    let banner = stack.output.join("\n");
    for (name, port) in SERVICE_NAMES.iter().zip(stack.ports) {
        assert!(
            banner.contains(&format!("127.0.0.1:{port}")),
            "banner lacks the {name} endpoint:\n{banner}"
        );
    }
    assert!(banner.contains("grpcurl -plaintext"), "{banner}");

    // The development key is printed and written to DATA_DIR/dev-api-key.
    let key = std::fs::read_to_string(data.join("dev-api-key")).unwrap();
    let key = key.trim();
    assert!(key.starts_with("rpk_") && key.len() == 56, "{key}");
    assert!(banner.contains(key));

    for (i, name) in SERVICE_NAMES.iter().enumerate() {
        let addr = stack.addr(i);
        // list: only what the port really serves (health, reflection-listed).
        let listed = grpcurl_ok(&[&addr, "list"]);
        assert!(
            listed.lines().any(|l| l == "grpc.health.v1.Health"),
            "{}: {listed}",
            name
        );
        // describe: the schema comes over reflection.
        let described = grpcurl_ok(&[&addr, "describe", "grpc.health.v1.Health"]);
        assert!(described.contains("rpc Check"), "{described}");
        let described = grpcurl_ok(&[
            &addr,
            "describe",
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
        ]);
        assert!(described.contains("SERVING"), "{described}");
        // Health: SERVING overall.
        let health = grpcurl_ok(&[&addr, "grpc.health.v1.Health/Check"]);
        assert!(health.contains("\"SERVING\""), "{}: {health}", name);
    }

    // The gateway: AdminService with the development key, which belongs to the
    // operator tenant; no key, no answer.
    let gateway = stack.addr(0);
    let auth = format!("authorization: Bearer {key}");
    let listed = grpcurl_ok(&["-H", &auth, &gateway, "list"]);
    assert!(
        listed.contains("rapport.gateway.v1.AdminService"),
        "{listed}"
    );
    let tenant = grpcurl_ok(&[
        "-H",
        &auth,
        "-d",
        "{}",
        &gateway,
        "rapport.gateway.v1.AdminService/GetTenant",
    ]);
    assert!(
        tenant.contains("\"isOperator\": true") && tenant.contains("\"displayName\": \"dev\""),
        "{tenant}"
    );
    let out = grpcurl_run(&[
        "-d",
        "{}",
        &gateway,
        "rapport.gateway.v1.AdminService/GetTenant",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same call with buf curl, reading the schema from the contracts.
    let buf = support::buf_curl(
        &gateway,
        "rapport.gateway.v1.AdminService/GetTenant",
        &auth,
        "{}",
    );
    assert!(buf.contains("\"isOperator\": true"), "{buf}");

    // Prometheus metrics count the calls just made, by service, method and
    // canonical status code; every family has its HELP and TYPE; the build
    // and the process report themselves.
    let metrics = support::http_get(stack.metrics_port, "/metrics");
    assert!(
        metrics.contains(r#"rapport_grpc_requests_total{component="gateway",service="rapport.gateway.v1.AdminService",method="GetTenant",code="OK"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("rapport_grpc_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let families: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
        })
        .collect();
    assert!(!families.is_empty());
    for family in families {
        assert!(
            metrics.contains(&format!("# HELP {family} "))
                && metrics.contains(&format!("# TYPE {family} ")),
            "{family} has no HELP or TYPE: {metrics}"
        );
    }
    for wanted in [
        r#"rapport_build_info{version=""#,
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(wanted), "no {wanted}: {metrics}");
    }

    // An unknown service name is NOT_FOUND, not a pretend answer.
    let out = grpcurl_run(&[
        "-d",
        r#"{"service":"rapport.nothing.v1.Nope"}"#,
        &stack.addr(1),
        "grpc.health.v1.Health/Check",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = stack.ports[0];
    let rest = stack.stop();
    assert!(
        rest.iter().any(|l| l.contains("Rapport stopped.")),
        "{rest:?}"
    );
    // Everything is closed, the embedded PostgreSQL included.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        !data.join("postgres/postmaster.pid").exists(),
        "the embedded PostgreSQL is still running"
    );

    // A second start reuses the data and the development key.
    let stack = DevStack::start(&data, &[], &[]);
    let again = std::fs::read_to_string(data.join("dev-api-key")).unwrap();
    assert_eq!(again.trim(), key);
    stack.stop();
}

#[test]
fn dev_stack_takes_a_fixed_key_and_an_external_database() {
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rapport_testkit::database());
    let dir = tempfile::tempdir().unwrap();
    let fixed = "rpk_0123abcd_fixedfixedfixedfixedfixedfixedfixedfixe";
    let stack = DevStack::start(
        dir.path(),
        &["--database-url", &db.url],
        &[("RAPPORT_DEV_API_KEY", fixed)],
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dev-api-key"))
            .unwrap()
            .trim(),
        fixed
    );
    assert!(
        !dir.path().join("postgres").exists(),
        "no embedded PostgreSQL with --database-url"
    );
    let health = grpcurl_ok(&[&stack.addr(0), "grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"SERVING\""));
    stack.stop();

    // A malformed fixed key is refused with a message naming the setting.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["dev", "--database-url", &db.url, "--data-dir"])
        .arg(dir.path())
        .args([
            "--gateway-listen",
            "127.0.0.1:0",
            "--profile-listen",
            "127.0.0.1:0",
            "--interaction-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--segmentation-listen",
            "127.0.0.1:0",
            "--valuation-listen",
            "127.0.0.1:0",
            "--engagement-listen",
            "127.0.0.1:0",
        ])
        .env("RAPPORT_DEV_API_KEY", "not-a-key")
        .env("RAPPORT_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RAPPORT_DEV_API_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_validates_configuration_and_guards_its_port() {
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rapport_testkit::database());
    let rapport = env!("CARGO_BIN_EXE_rapport");

    // The first admin key of a deployment, from the command line.
    let out = std::process::Command::new(rapport)
        .args(["admin-key", "--database-url", &db.url])
        .env("RAPPORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("rpk_") && key.len() == 56, "{key}");

    // Migrate, then serve one service as a container would.
    let out = std::process::Command::new(rapport)
        .args(["migrate", "--database-url", &db.url])
        .env("RAPPORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the internal credential the service refuses to start, naming it.
    let out = std::process::Command::new(rapport)
        .args(["serve", "profile"])
        .env("RAPPORT_DATABASE_URL", &db.url)
        .env_remove("RAPPORT_INTERNAL_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RAPPORT_INTERNAL_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = support::free_ports()[0];
    let mut child = std::process::Command::new(rapport)
        .args(["serve", "profile"])
        .env("RAPPORT_DATABASE_URL", &db.url)
        .env("RAPPORT_LISTEN", format!("127.0.0.1:{port}"))
        .env("RAPPORT_INTERNAL_TOKEN", "a-long-internal-credential")
        .env("RAPPORT_LOG_FORMAT", "json")
        .env("RAPPORT_LOG", "warn")
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rapport serve profile did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Health and reflection answer without the credential.
    assert!(grpcurl_ok(&[&addr, "grpc.health.v1.Health/Check"]).contains("\"SERVING\""));
    assert!(grpcurl_ok(&[&addr, "list"]).contains("grpc.health.v1.Health"));
    let internal_auth = [
        "-d",
        r#"{"service":"rapport.internal_auth"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ];
    assert!(grpcurl_ok(&internal_auth).contains("\"SERVING\""));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    // With internal authentication off it still serves, but says so loudly:
    // in its log at start and in health under `rapport.internal_auth`.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(rapport)
        .args(["serve", "profile"])
        .env("RAPPORT_DATABASE_URL", &db.url)
        .env("RAPPORT_LISTEN", format!("127.0.0.1:{port}"))
        .env("RAPPORT_REQUIRE_INTERNAL_AUTH", "false")
        .env_remove("RAPPORT_INTERNAL_TOKEN")
        .env("RAPPORT_LOG", "warn")
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let internal_auth = [
        "-d",
        r#"{"service":"rapport.internal_auth"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ];
    assert!(grpcurl_ok(&internal_auth).contains("\"NOT_SERVING\""));
    assert!(grpcurl_ok(&[&addr, "grpc.health.v1.Health/Check"]).contains("\"SERVING\""));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logged.contains("INTERNAL AUTHENTICATION IS OFF"),
        "{logged}"
    );
}

#[test]
fn dev_refuses_addresses_beyond_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_ports()[0];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--gateway-listen", &format!("0.0.0.0:{port}")])
        .env_remove("RAPPORT_DATABASE_URL")
        .env("RAPPORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "--gateway-listen 0.0.0.0:{port} is not a loopback address"
        )) && err.contains("--allow-remote"),
        "{err}"
    );
    // Refused before anything started: no database was made.
    assert!(!dir.path().join("data/postgres").exists());
}

/// Whether this process runs as root.
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn dev_as_root_leaves_no_database_outside_its_data_dir() {
    if !root() {
        eprintln!(
            "skipped: only root runs the embedded PostgreSQL outside an unreachable data dir"
        );
        return;
    }
    // A data directory Debian's postgres user cannot reach (mode 0700,
    // owned by root).
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let tag: String = data
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let scratch = std::path::PathBuf::from("/var/tmp").join(format!("rapport-postgres{tag}"));
    let stack = DevStack::start(&data, &[], &[]);
    assert!(scratch.join("PG_VERSION").exists(), "{}", scratch.display());
    stack.stop();
    assert!(
        !scratch.exists(),
        "the embedded cluster's data stayed behind in {}",
        scratch.display()
    );
}
