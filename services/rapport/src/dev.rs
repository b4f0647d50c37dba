//! `rapport dev`: the whole platform on one machine, for development.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use rapport_kit::config::{LogFormat, ServiceConfig};
use rapport_kit::pg::{PgOptions, PgServer};
use rapport_kit::shutdown::Shutdown;
use sqlx::{Connection, PgConnection};

use crate::services;

/// Options of `rapport dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the embedded PostgreSQL keeps its data and where the development
    /// API key is written (`DATA_DIR/dev-api-key`).
    #[arg(long, env = "RAPPORT_DATA_DIR", default_value = ".rapport")]
    data_dir: PathBuf,
    /// Use this PostgreSQL (an administrative URL) instead of an embedded one.
    #[arg(long, env = "RAPPORT_DATABASE_URL")]
    database_url: Option<String>,
    /// Port of the embedded PostgreSQL on 127.0.0.1 (default: a free one).
    #[arg(long, env = "RAPPORT_DEV_POSTGRES_PORT")]
    postgres_port: Option<u16>,
    /// Gateway address: the one endpoint clients use.
    #[arg(
        long,
        env = "RAPPORT_GATEWAY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    gateway_listen: SocketAddr,
    /// Profile service address (direct, development only).
    #[arg(
        long,
        env = "RAPPORT_PROFILE_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    profile_listen: SocketAddr,
    /// Interaction service address (direct, development only).
    #[arg(
        long,
        env = "RAPPORT_INTERACTION_LISTEN",
        default_value = "127.0.0.1:50053"
    )]
    interaction_listen: SocketAddr,
    /// Segmentation service address (direct, development only).
    #[arg(
        long,
        env = "RAPPORT_SEGMENTATION_LISTEN",
        default_value = "127.0.0.1:50054"
    )]
    segmentation_listen: SocketAddr,
    /// Valuation service address (direct, development only).
    #[arg(
        long,
        env = "RAPPORT_VALUATION_LISTEN",
        default_value = "127.0.0.1:50055"
    )]
    valuation_listen: SocketAddr,
    /// Engagement service address (direct, development only).
    #[arg(
        long,
        env = "RAPPORT_ENGAGEMENT_LISTEN",
        default_value = "127.0.0.1:50056"
    )]
    engagement_listen: SocketAddr,
    /// Prometheus metrics of every service, at http://ADDRESS/metrics.
    #[arg(long, env = "RAPPORT_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// Browser origins allowed to call the gateway with gRPC-Web (comma-separated, `*` for any).
    #[arg(long, env = "RAPPORT_GRPC_WEB_ORIGINS", default_value = "*")]
    grpc_web_origins: String,
    /// Log format: pretty or json.
    #[arg(long, env = "RAPPORT_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"])]
    log_format: String,
    /// Fill the development tenant with this many generated demo customers
    /// (see `rapport seed`) once the stack is up.
    #[arg(long, value_name = "CUSTOMERS", num_args = 0..=1, default_missing_value = "1000")]
    pub demo: Option<usize>,
    /// Log filter directives.
    #[arg(long, env = "RAPPORT_LOG", default_value = "info")]
    log: String,
    /// Accept listen addresses other than loopback ones. A development
    /// stack's direct service ports trust any tenant a caller names and its
    /// database trusts local logins: only for machines no one else can reach.
    #[arg(long, env = "RAPPORT_DEV_ALLOW_REMOTE")]
    allow_remote: bool,
}

impl DevArgs {
    fn listen_of(&self, service: &str) -> SocketAddr {
        match service {
            "profile" => self.profile_listen,
            "interaction" => self.interaction_listen,
            "segmentation" => self.segmentation_listen,
            "valuation" => self.valuation_listen,
            "engagement" => self.engagement_listen,
            _ => self.gateway_listen,
        }
    }
}

/// Runs the development stack until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let format = if args.log_format == "json" {
        LogFormat::Json
    } else {
        LogFormat::Pretty
    };
    let _telemetry = rapport_kit::telemetry::init("dev", format, &args.log);

    check_loopback(&args)?;

    // Bind every port first, so a busy one fails fast and says which.
    let mut listeners = Vec::new();
    for s in services::ALL {
        let addr = args.listen_of(s.name);
        let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for the {} (--{}-listen)",
                s.name, s.name
            )
        })?;
        listeners.push((s, l));
    }

    rapport_kit::metrics::install(args.metrics_listen, "dev")
        .map_err(|e| anyhow::anyhow!("--metrics-listen: {e}"))?;

    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let data_dir = args.data_dir.canonicalize()?;

    // A cluster kept outside the data directory is removed when the stack
    // stops, so no copy of its data stays behind.
    let mut scratch: Option<PathBuf> = None;
    let (admin_url, postgres) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let (pg_dir, kept) = postgres_dir(&data_dir);
            if !kept {
                // What an earlier run left (it was killed before it could
                // clean up).
                let _ = std::fs::remove_dir_all(&pg_dir);
                scratch = Some(pg_dir.clone());
            }
            tracing::info!(data = %pg_dir.display(), "starting the embedded PostgreSQL");
            let opts = PgOptions {
                data_dir: pg_dir,
                port: args.postgres_port,
                throwaway: !kept,
            };
            let server = tokio::task::spawn_blocking(move || PgServer::start(&opts)).await??;
            ensure_database(&server.url("postgres"), "rapport").await?;
            (server.url("rapport"), Some(server))
        }
    };

    services::migrate(&admin_url, &services::ALL).await?;

    let gateway_pool = rapport_kit::db::connect(&admin_url, rapport_gateway::SCHEMA, 2).await?;
    let key_file = data_dir.join("dev-api-key");
    let fixed = std::env::var("RAPPORT_DEV_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let earlier = std::fs::read_to_string(&key_file)
        .ok()
        .map(|k| k.trim().to_string());
    let wanted = fixed.clone().or(earlier);
    let creds =
        rapport_gateway::ensure_dev_credentials(&gateway_pool, wanted.as_deref(), fixed.is_some())
            .await?;
    gateway_pool.close().await;
    write_secret(&key_file, &creds.api_key)?;

    let mut token = [0u8; 24];
    getrandom::fill(&mut token).map_err(|e| anyhow::anyhow!("system random source: {e}"))?;
    let internal_token = hex::encode(token);

    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    let mut tasks = Vec::new();
    for (s, listener) in listeners {
        let config = ServiceConfig {
            listen: listener.local_addr()?,
            database_url: admin_url.clone(),
            db_max_connections: 8,
            log_format: format,
            log: args.log.clone(),
            internal_token: Some(internal_token.clone()),
            // The direct service ports of a development stack take calls from
            // grpcurl without the internal credential.
            require_internal_auth: false,
            grpc_web_origins: (s.name == "gateway").then(|| args.grpc_web_origins.clone()),
            // Every service knows where its peers are.
            profile_url: Some(format!("http://{}", args.profile_listen)),
            interaction_url: Some(format!("http://{}", args.interaction_listen)),
            segmentation_url: Some(format!("http://{}", args.segmentation_listen)),
            valuation_url: Some(format!("http://{}", args.valuation_listen)),
            engagement_url: Some(format!("http://{}", args.engagement_listen)),
            ..ServiceConfig::default()
        };
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let r = rapport_kit::server::run_service(
                s.name,
                s.schema,
                &config,
                listener,
                shutdown.clone(),
                |b, rt| {
                    b.development();
                    (s.register)(b, rt)
                },
            )
            .await;
            if let Err(e) = &r {
                tracing::error!(service = s.name, error = %e, "service failed; stopping the stack");
                shutdown.trigger();
            }
            r.map_err(|e| anyhow::anyhow!("{}: {e}", s.name))
        }));
    }

    wait_until_forwarded_services_serve(args.gateway_listen).await;
    print_banner(&args, &creds, &key_file, &admin_url, postgres.is_some());

    if let Some(customers) = args.demo {
        let gateway = format!("http://{}", args.gateway_listen);
        let key = creds.api_key.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // Demo data of an earlier run stays as it is: seeding again with
            // a later date would send the same request ids with other content.
            if let Ok(true) = crate::seed::has_customers(&gateway, &key).await {
                println!(
                    "Demo data: the development tenant already has customers; nothing generated \
                     (start with an empty --data-dir for new demo data)."
                );
                return;
            }
            println!("Generating {customers} demo customers (rapport seed) ...");
            let as_of = chrono::Utc::now();
            match crate::seed::seed(&gateway, &key, customers, 42, as_of, 8).await {
                Ok(r) => println!(
                    "Demo data ready: {} customers, {} interactions.",
                    r.customers,
                    r.interactions_accepted + r.interactions_duplicate
                ),
                Err(e) if stop.is_triggered() => {
                    tracing::debug!(error = %e, "demo data interrupted by shutdown")
                }
                Err(e) => {
                    println!("Demo data failed: {e:#}");
                    tracing::error!(error = format!("{e:#}"), "generating demo data failed")
                }
            }
        });
    }

    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(anyhow::anyhow!("a service task panicked: {e}")),
        }
    }
    if let Some(mut pg) = postgres {
        tracing::info!("stopping the embedded PostgreSQL");
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    if let Some(dir) = scratch {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(data = %dir.display(), "removed the embedded PostgreSQL's data")
            }
            Err(e) => {
                tracing::warn!(data = %dir.display(), error = %e, "could not remove the embedded PostgreSQL's data; remove it by hand")
            }
        }
    }
    println!("Rapport stopped.");
    result
}

/// Where the embedded cluster lives, and whether it is kept between runs:
/// `DATA_DIR/postgres`, kept, unless we run as root and Debian's `postgres`
/// user (who runs the server) cannot reach that folder (say, under /root);
/// then a folder under /var/tmp named after it, removed when the stack
/// stops (and at the next start, should the stack be killed).
fn postgres_dir(data_dir: &Path) -> (PathBuf, bool) {
    let wanted = data_dir.join("postgres");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .is_some_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        });
    if !root {
        return (wanted, true);
    }
    let reachable = Command::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            "test",
            "-x",
        ])
        .arg(data_dir)
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return (wanted, true);
    }
    let tag: String = data_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let fallback = PathBuf::from("/var/tmp").join(format!("rapport-postgres{tag}"));
    tracing::warn!(
        wanted = %wanted.display(),
        using = %fallback.display(),
        "the postgres user cannot reach the data directory: the database lives in a scratch \
         folder for this run only and is removed when the stack stops; to keep data between \
         runs, give a --data-dir the postgres user can reach (e.g. under /var/lib or /srv) \
         or a --database-url"
    );
    (fallback, false)
}

/// Refuses listen addresses that are not loopback ones unless
/// `--allow-remote` is given (then says what that exposes).
fn check_loopback(args: &DevArgs) -> anyhow::Result<()> {
    let mut exposed: Vec<String> = services::ALL
        .iter()
        .map(|s| (s.name, args.listen_of(s.name)))
        .chain([("metrics", args.metrics_listen)])
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .map(|(name, addr)| format!("--{name}-listen {addr}"))
        .collect();
    exposed.sort();
    if exposed.is_empty() {
        return Ok(());
    }
    let risk = "a development stack's direct service ports take calls without credentials \
                and trust any tenant a caller names, and its database trusts local logins";
    if args.allow_remote {
        tracing::warn!(addresses = %exposed.join(", "), "listening beyond this machine (--allow-remote): {risk}");
        return Ok(());
    }
    anyhow::bail!(
        "{} not a loopback address: {risk}. Use 127.0.0.1 (or ::1), pass --allow-remote if \
         no one else can reach this machine, or run the services with `rapport serve` for a \
         deployment",
        if exposed.len() == 1 {
            format!("{} is", exposed[0])
        } else {
            format!("{} are", exposed.join(", "))
        }
    )
}

async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{secret}")?;
    Ok(())
}

/// Waits (up to 30 s) until the gateway reports every service it forwards
/// SERVING, so that "ready" means what a client or probe asking the
/// gateway's health will see; says which are not when the time is up.
async fn wait_until_forwarded_services_serve(gateway: SocketAddr) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let endpoint = format!("http://{gateway}");
    loop {
        let mut waiting = Vec::new();
        let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
            Ok(e) => e.connect().await.ok(),
            Err(_) => None,
        };
        for service in rapport_gateway::front::SERVED {
            let serving = match &channel {
                Some(ch) => {
                    rapport_kit::peer::reports_serving(
                        ch.clone(),
                        service,
                        None,
                        std::time::Duration::from_secs(2),
                    )
                    .await
                }
                None => false,
            };
            if !serving {
                waiting.push(service);
            }
        }
        if waiting.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(services = ?waiting, "the gateway does not report these services SERVING yet");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn print_banner(
    args: &DevArgs,
    creds: &rapport_gateway::DevCredentials,
    key_file: &Path,
    admin_url: &str,
    embedded: bool,
) {
    let db = if embedded {
        format!("embedded PostgreSQL at {admin_url}")
    } else {
        "the PostgreSQL at --database-url".to_string()
    };
    println!(
        "\nRapport is ready ({db}).\n\n\
         \x20 gateway       {}\n\
         \x20 profile       {}\n\
         \x20 interaction   {}\n\
         \x20 segmentation  {}\n\
         \x20 valuation     {}\n\
         \x20 engagement    {}\n\
         \x20 metrics       http://{}/metrics\n\n\
         \x20 development tenant  {}\n\
         \x20 API key (every scope, also in {}):\n\
         \x20   {}\n\n\
         Try:\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer $(cat {})\" {} list\n\
         \x20 grpcurl -plaintext {} grpc.health.v1.Health/Check\n\n\
         Press Ctrl-C to stop.",
        args.gateway_listen,
        args.profile_listen,
        args.interaction_listen,
        args.segmentation_listen,
        args.valuation_listen,
        args.engagement_listen,
        args.metrics_listen,
        creds.tenant_id,
        key_file.display(),
        creds.api_key,
        key_file.display(),
        args.gateway_listen,
        args.profile_listen,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevArgs,
    }

    fn args(extra: &[&str]) -> DevArgs {
        let mut all = vec!["rapport"];
        all.extend_from_slice(extra);
        Cli::parse_from(all).dev
    }

    #[test]
    fn loopback_addresses_pass_and_others_need_allow_remote() {
        assert!(check_loopback(&args(&[])).is_ok());
        assert!(check_loopback(&args(&["--profile-listen", "[::1]:50052"])).is_ok());
        let e = check_loopback(&args(&[
            "--profile-listen",
            "0.0.0.0:50052",
            "--metrics-listen",
            "192.168.1.4:9464",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "--metrics-listen 192.168.1.4:9464, --profile-listen 0.0.0.0:50052 are not"
            ),
            "{e}"
        );
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(
            check_loopback(&args(&[
                "--profile-listen",
                "0.0.0.0:50052",
                "--allow-remote"
            ]))
            .is_ok()
        );
    }
}
