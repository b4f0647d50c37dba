//! The platform under test: a database of its own, every service as its own
//! process (`rapport serve <service>`, as deployed), and tenants with keys.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rapport_kit::pg::{PgOptions, PgServer};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::services;

/// Services in the order they start (the gateway last, once its backends are up).
pub const SERVICES: [&str; 6] = [
    "profile",
    "interaction",
    "segmentation",
    "valuation",
    "engagement",
    "gateway",
];

/// A tenant of the gateway and a key holding every scope.
#[derive(Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub key: String,
}

struct Process {
    name: &'static str,
    port: u16,
    child: Child,
}

/// How the services are started (to start one again after a fault).
struct Launch {
    exe: std::path::PathBuf,
    log: std::fs::File,
    ports: BTreeMap<&'static str, u16>,
}

/// The running platform.
pub struct Stack {
    /// Administrative URL of the bench's own database.
    pub url: String,
    /// Whether the database is an embedded throwaway cluster (no fsync).
    pub embedded: bool,
    /// The internal credential peers and direct callers present.
    pub internal_token: String,
    processes: Vec<Process>,
    launch: Option<Launch>,
    gateway_pool: PgPool,
    /// With `--database-url`: the server's URL and the database to drop.
    drop_database: Option<(String, String)>,
    _pg: Option<(PgServer, tempfile::TempDir)>,
}

impl Stack {
    /// Starts PostgreSQL (or creates a database on `database_url`'s server),
    /// migrates, and starts every service, their logs appended to `log`.
    pub async fn start(database_url: Option<&str>, log: &std::path::Path) -> anyhow::Result<Stack> {
        let name = format!("rapport_bench_{}", Uuid::new_v4().simple());
        let (server_url, pg) = match database_url {
            Some(url) => (url.to_string(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rapport-bench-pg-")
                    .tempdir()
                    .context("cannot create a directory for the benchmark's PostgreSQL")?;
                let opts = PgOptions {
                    data_dir: dir.path().join("data"),
                    port: None,
                    throwaway: true,
                };
                let server = tokio::task::spawn_blocking(move || PgServer::start(&opts))
                    .await?
                    .context("cannot start the benchmark's PostgreSQL")?;
                (server.url("postgres"), Some((server, dir)))
            }
        };
        let mut conn = PgConnection::connect(&server_url)
            .await
            .with_context(|| format!("cannot connect to {server_url}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE template0"
        )))
        .execute(&mut conn)
        .await
        .context("cannot create the benchmark database")?;
        conn.close().await.ok();
        let url = rapport_kit::db::replace_database(&server_url, &name);
        let embedded = pg.is_some();
        services::migrate(&url, &services::ALL).await?;
        let gateway_pool = rapport_kit::db::connect(&url, rapport_gateway::SCHEMA, 2).await?;

        let mut token = [0u8; 24];
        getrandom::fill(&mut token).map_err(|e| anyhow::anyhow!("system random source: {e}"))?;
        let mut stack = Stack {
            url,
            embedded,
            internal_token: hex::encode(token),
            processes: Vec::new(),
            launch: None,
            gateway_pool,
            drop_database: database_url.map(|u| (u.to_string(), name)),
            _pg: pg,
        };
        let mut ports = BTreeMap::new();
        for s in SERVICES {
            ports.insert(s, rapport_kit::pg::free_port()?);
        }
        let exe = std::env::current_exe().context("cannot find the rapport binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        stack.launch = Some(Launch { exe, log, ports });
        for s in SERVICES {
            let (port, child) = stack.spawn(s)?;
            stack.processes.push(Process {
                name: s,
                port,
                child,
            });
        }
        for s in SERVICES {
            stack.wait_serving(s).await?;
        }
        Ok(stack)
    }

    /// Starts `rapport serve <service>` on its port; the port and the child.
    fn spawn(&self, service: &'static str) -> anyhow::Result<(u16, Child)> {
        let launch = self
            .launch
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the stack has no launch settings"))?;
        let port = launch.ports[service];
        let mut cmd = Command::new(&launch.exe);
        cmd.arg("serve")
            .arg(service)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RAPPORT_LISTEN", format!("127.0.0.1:{port}"))
            .env("RAPPORT_DATABASE_URL", &self.url)
            .env("RAPPORT_DB_MAX_CONNECTIONS", "8")
            // Warnings only, unless RAPPORT_BENCH_LOG asks for more.
            .env(
                "RAPPORT_LOG",
                std::env::var("RAPPORT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RAPPORT_INTERNAL_TOKEN", &self.internal_token)
            .env("RAPPORT_REQUIRE_INTERNAL_AUTH", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(launch.log.try_clone()?))
            .kill_on_drop(true);
        for peer in [
            "profile",
            "interaction",
            "segmentation",
            "valuation",
            "engagement",
        ] {
            cmd.env(
                format!("RAPPORT_{}_URL", peer.to_uppercase()),
                format!("http://127.0.0.1:{}", launch.ports[peer]),
            );
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `rapport serve {service}`"))?;
        Ok((port, child))
    }

    /// Kills `service` with SIGKILL, starts it again on its port and waits
    /// until it serves; how long it was gone.
    pub async fn kill_and_restart(&mut self, service: &'static str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if let Some(p) = self.processes.iter_mut().find(|p| p.name == service) {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
        }
        let (_, child) = self.spawn(service)?;
        if let Some(p) = self.processes.iter_mut().find(|p| p.name == service) {
            p.child = child;
        }
        self.wait_serving(service).await?;
        Ok(started.elapsed())
    }

    /// Stops the embedded PostgreSQL (fast shutdown) and starts it again on
    /// the same port and data; false with `--database-url` (not ours to stop).
    pub async fn restart_postgres(&mut self) -> anyhow::Result<bool> {
        let Some((server, dir)) = self._pg.take() else {
            return Ok(false);
        };
        let (server, dir) = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let port = server.port();
            server.stop();
            drop(server);
            let opts = PgOptions {
                data_dir: dir.path().join("data"),
                port: Some(port),
                throwaway: true,
            };
            PgServer::start(&opts).map(|s| (s, dir))
        })
        .await?
        .context("cannot start the benchmark's PostgreSQL again")?;
        self._pg = Some((server, dir));
        Ok(true)
    }

    /// Ends every database connection of `schema`'s service (its feed
    /// consumers' included); how many were ended.
    pub async fn drop_connections(&self, schema: &str) -> anyhow::Result<i64> {
        let pool = self.admin_pool().await?;
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(format!("rapport-{schema}"))
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        Ok(ended)
    }

    fn process(&self, service: &str) -> anyhow::Result<&Process> {
        self.processes
            .iter()
            .find(|p| p.name == service)
            .ok_or_else(|| anyhow::anyhow!("no {service} process"))
    }

    /// `http://127.0.0.1:PORT` of `service`.
    pub fn endpoint(&self, service: &str) -> anyhow::Result<String> {
        Ok(format!("http://127.0.0.1:{}", self.process(service)?.port))
    }

    /// A connected channel to `service`.
    pub async fn channel(&self, service: &str) -> anyhow::Result<Channel> {
        let endpoint = self.endpoint(service)?;
        Endpoint::from_shared(endpoint.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot reach {service} at {endpoint}"))
    }

    async fn wait_serving(&mut self, service: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let endpoint = self.endpoint(service)?;
        loop {
            if let Some(p) = self.processes.iter_mut().find(|p| p.name == service)
                && let Some(status) = p.child.try_wait()?
            {
                anyhow::bail!("`rapport serve {service}` exited at start: {status}");
            }
            let ok = match Endpoint::from_shared(endpoint.clone())?.connect().await {
                Ok(ch) => {
                    rapport_kit::peer::reports_serving(ch, "", None, Duration::from_secs(2)).await
                }
                Err(_) => false,
            };
            if ok {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("{service} did not report SERVING within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new tenant with a key holding every scope and a rate limit far above
    /// what the benchmark offers (the limiter is measured, not the limit).
    pub async fn tenant(&self, name: &str) -> anyhow::Result<Tenant> {
        use rapport_gateway::{keys, store};
        let id = Uuid::now_v7();
        store::create_tenant(&self.gateway_pool, id, name).await?;
        store::set_rate_limit(&self.gateway_pool, id, 1_000_000, 1_000_000).await?;
        store::set_tenant_budget(&self.gateway_pool, id, 1_000_000, 1_000_000, 100_000).await?;
        let key = keys::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let scopes: Vec<String> = keys::SCOPES.iter().map(|s| s.to_string()).collect();
        store::insert_key(&self.gateway_pool, id, &key, "rapport bench", &scopes, None).await?;
        Ok(Tenant { id, key: key.key })
    }

    /// Gives `tenant` a tenant's default limits again (per key 100 calls/s,
    /// bursts of 200, 100 open streams; for all keys together 1,000 calls/s,
    /// bursts of 2,000, 1,000 streams); the gateway applies them within
    /// seconds.
    pub async fn default_limits(&self, tenant: Uuid) -> anyhow::Result<()> {
        use rapport_gateway::{admin, store};
        let pool = &self.gateway_pool;
        store::set_rate_limit(
            pool,
            tenant,
            admin::DEFAULT_RATE_PER_SECOND,
            admin::DEFAULT_BURST,
        )
        .await?;
        store::set_max_streams(pool, tenant, admin::DEFAULT_MAX_STREAMS).await?;
        store::set_tenant_budget(
            pool,
            tenant,
            admin::DEFAULT_TENANT_RATE_PER_SECOND,
            admin::DEFAULT_TENANT_BURST,
            admin::DEFAULT_TENANT_MAX_STREAMS,
        )
        .await?;
        Ok(())
    }

    /// A pool on `schema` of the bench database (for baselines and bulk loads).
    pub async fn pool(&self, schema: rapport_kit::db::SchemaSpec) -> anyhow::Result<PgPool> {
        Ok(rapport_kit::db::connect(&self.url, schema, 4).await?)
    }

    /// A pool on the bench database with no schema of its own (queries name
    /// their schemas).
    pub async fn admin_pool(&self) -> anyhow::Result<PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await?)
    }

    /// Process ids of the services.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes
            .iter()
            .filter_map(|p| p.child.id().map(|id| (p.name, id)))
            .collect()
    }

    /// Stops the services (SIGTERM, then kill) and drops the bench database.
    pub async fn stop(mut self) {
        for p in &mut self.processes {
            if let Some(id) = p.child.id() {
                // SIGTERM lets it drain as an orchestrator would.
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(id.to_string())
                    .status();
            }
        }
        for p in &mut self.processes {
            if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
        self.gateway_pool.close().await;
        if let Some((server, name)) = self.drop_database.take()
            && let Ok(mut conn) = PgConnection::connect(&server).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Resident memory of one process, from `/proc/PID/status`: (VmRSS, VmHWM) in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples every service's resident memory every 100 ms and keeps the
/// largest seen since the last `take`.
#[derive(Clone)]
pub struct MemorySampler {
    peaks: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    stop: Arc<AtomicBool>,
}

impl MemorySampler {
    pub fn start(pids: Vec<(&'static str, u32)>) -> MemorySampler {
        let sampler = MemorySampler {
            peaks: Arc::default(),
            stop: Default::default(),
        };
        let s = sampler.clone();
        tokio::spawn(async move {
            while !s.stop.load(Ordering::Relaxed) {
                for (name, pid) in &pids {
                    if let Some((rss, _)) = memory_kib(*pid)
                        && let Ok(mut peaks) = s.peaks.lock()
                    {
                        let e = peaks.entry(name).or_default();
                        *e = (*e).max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        sampler
    }

    /// The peaks since the last call, and a fresh start.
    pub fn take(&self) -> BTreeMap<&'static str, u64> {
        self.peaks
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
