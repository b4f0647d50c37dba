//! Test harness for Rapport.
//!
//! * [`database`] gives each test a fresh database on a throwaway PostgreSQL
//!   cluster: the one at `RAPPORT_TEST_DATABASE_URL` when set (the test script
//!   starts one for the whole run), or else one this process starts on a free
//!   port in a temporary directory (as Debian's `postgres` user when root).
//! * [`calls`] makes the calls tests only set the scene with, one line each.
//! * [`hostile`] is the vocabulary of bad input every service's tests send.
//! * [`serve`] runs a service in-process on an ephemeral port and hands back its
//!   address, for clients to connect to over real gRPC.

pub mod calls;
pub mod hostile;

use std::net::SocketAddr;
use std::sync::OnceLock;

use rapport_kit::pg::{PgOptions, PgServer};
use rapport_kit::shutdown::Shutdown;
use sqlx::{Connection, PgConnection};

/// Environment variable naming a server to create test databases on (a
/// superuser URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
pub const TEST_DATABASE_URL: &str = "RAPPORT_TEST_DATABASE_URL";

struct Cluster {
    admin_url: String,
    _server: Option<(PgServer, tempfile::TempDir)>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

fn cluster() -> Result<&'static Cluster, String> {
    CLUSTER
        .get_or_init(|| {
            if let Ok(url) = std::env::var(TEST_DATABASE_URL) {
                return Ok(Cluster {
                    admin_url: url,
                    _server: None,
                });
            }
            remove_stale_clusters();
            let dir = tempfile::Builder::new()
                .prefix("rapport-test-pg-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let server = PgServer::start(&PgOptions {
                data_dir: dir.path().join("data"),
                port: None,
                throwaway: true,
            })
            .map_err(|e| e.to_string())?;
            Ok(Cluster {
                admin_url: server.url("postgres"),
                _server: Some((server, dir)),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Removes data directories of earlier test processes' clusters: a process's
/// own cluster lives as long as the process, and its server stops with it,
/// but the directory stays behind. One without `postmaster.pid` whose server is
/// gone, and older than a minute (not one being initialised right now), goes.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("rapport-test-pg-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 60);
        if is_ours && old && !path.join("data/postmaster.pid").exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A fresh, empty database for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Superuser URL of the new database.
    pub url: String,
    /// Its name.
    pub name: String,
}

/// Creates a fresh database on the test cluster. Panics with the reason when no
/// cluster can be had (tests cannot go on without one).
pub async fn database() -> TestDatabase {
    let cluster = match cluster() {
        Ok(c) => c,
        Err(e) => panic!("no PostgreSQL for tests: {e}"),
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&cluster.admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", cluster.admin_url));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    let _ = conn.close().await;
    TestDatabase {
        url: replace_database(&cluster.admin_url, &name),
        name,
    }
}

/// `url` with its database name replaced by `database`.
pub use rapport_kit::db::replace_database;

/// A service running in-process on 127.0.0.1 with an ephemeral port.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it.
    pub shutdown: Shutdown,
    /// Resolves when it has stopped.
    pub handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:port`, for tonic clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service and waits until it has.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.handle.await;
    }
}

/// Binds an ephemeral port and runs `serve(listener, shutdown)` on it.
pub async fn serve<F, Fut>(serve: F) -> Running
where
    F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind an ephemeral port on 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(serve(listener, shutdown.clone()));
    Running {
        addr,
        shutdown,
        handle,
    }
}

/// One Rapport service as its tests start it: its schema, its migrations and
/// what it registers on the server. Name one with [`service!`].
#[derive(Clone, Copy)]
pub struct Service {
    /// Where its data lives (its schema name is also its component name).
    pub schema: rapport_kit::db::SchemaSpec,
    /// Its own migrations.
    pub migrator: &'static sqlx::migrate::Migrator,
    /// Adds its gRPC services to the server.
    pub register: fn(&mut rapport_kit::server::ServerBuilder, &rapport_kit::server::ServiceRuntime),
}

/// The [`Service`] of a service crate: `service!(rapport_profile)`.
#[macro_export]
macro_rules! service {
    ($krate:ident) => {
        $crate::Service {
            schema: $krate::SCHEMA,
            migrator: &$krate::MIGRATOR,
            register: $krate::register,
        }
    };
}

impl Service {
    /// Creates its schema in `db` and applies its migrations.
    pub async fn migrate(&self, db: &TestDatabase) -> Result<(), sqlx::Error> {
        rapport_kit::db::migrate(&db.url, self.schema, self.migrator).await
    }

    /// A pool of at most `max` connections to its schema in `db`, as the
    /// service itself connects.
    pub async fn pool(&self, db: &TestDatabase, max: u32) -> sqlx::PgPool {
        rapport_kit::db::connect(&db.url, self.schema, max)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.schema.schema))
    }

    /// Runs it in-process with `config` (see [`serve`]).
    pub async fn serve(&self, config: rapport_kit::config::ServiceConfig) -> Running {
        let Service {
            schema, register, ..
        } = *self;
        serve(move |listener, shutdown| async move {
            rapport_kit::server::run_service(
                schema.schema,
                schema,
                &config,
                listener,
                shutdown,
                register,
            )
            .await
            .unwrap_or_else(|e| panic!("the {} service stopped: {e}", schema.schema));
        })
        .await
    }
}

/// A fresh database with every one of `services` migrated, in order.
pub async fn migrated(services: &[Service]) -> TestDatabase {
    let db = database().await;
    for service in services {
        service
            .migrate(&db)
            .await
            .unwrap_or_else(|e| panic!("cannot migrate {}: {e}", service.schema.schema));
    }
    db
}

/// A tonic channel to `running`.
pub async fn channel(running: &Running) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(running.endpoint())
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the service under test")
}

/// Sends the services' logs to the test's output (each test's own when run
/// by cargo), at `RUST_LOG`'s level, `warn` by default. Safe to call from
/// every test.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// The configuration a service under test runs with: `db`, eight
/// connections, and no internal credential required (tests call it as a
/// peer would, without one).
pub fn service_config(db: &TestDatabase) -> rapport_kit::config::ServiceConfig {
    rapport_kit::config::ServiceConfig {
        database_url: db.url.clone(),
        db_max_connections: 8,
        require_internal_auth: false,
        ..Default::default()
    }
}

/// `msg` as a call of `tenant` (the tenant header, as the gateway sets it).
pub fn for_tenant<T>(tenant: uuid::Uuid, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = tenant.to_string().parse() {
        r.metadata_mut()
            .insert(rapport_kit::context::TENANT_HEADER, v);
    }
    r
}

/// The message of a gRPC call that must succeed: `.await.answer()` where a
/// test would write `.await.unwrap().into_inner()`.
pub trait Answer<T> {
    /// The message; a failed call fails the test with its status.
    fn answer(self) -> T;
    /// The message; a failed call fails the test saying `what` failed.
    fn expect_answer(self, what: &str) -> T;
}

impl<T> Answer<T> for Result<tonic::Response<T>, tonic::Status> {
    #[track_caller]
    fn answer(self) -> T {
        match self {
            Ok(r) => r.into_inner(),
            Err(s) => panic!("the call failed: {s:?}"),
        }
    }

    #[track_caller]
    fn expect_answer(self, what: &str) -> T {
        match self {
            Ok(r) => r.into_inner(),
            Err(s) => panic!("{what}: {s:?}"),
        }
    }
}

/// The status of a gRPC call that must fail: `.await.refused(Code::NotFound)`
/// where a test would write `.await.unwrap_err()` and assert its code.
pub trait Refused {
    /// The status of a call that must fail with `code`; an answer, or
    /// another code, fails the test.
    fn refused(self, code: tonic::Code) -> tonic::Status;
}

impl<T> Refused for Result<T, tonic::Status> {
    #[track_caller]
    fn refused(self, code: tonic::Code) -> tonic::Status {
        match self {
            Ok(_) => panic!("expected {code:?}, the call succeeded"),
            Err(s) => {
                assert_eq!(s.code(), code, "{s:?}");
                s
            }
        }
    }
}

/// An update mask of `paths`.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// Waits until `check` holds, polling every 50 ms; fails the test naming
/// `what` after 30 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_names() {
        assert_eq!(
            replace_database("postgres://u@h:1/postgres", "t_1"),
            "postgres://u@h:1/t_1"
        );
        assert_eq!(
            replace_database("postgres://u@h:1", "t_1"),
            "postgres://u@h:1/t_1"
        );
        assert_eq!(
            replace_database("postgres://u:p@h:1/db?sslmode=disable", "t_1"),
            "postgres://u:p@h:1/t_1?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn a_fresh_database_per_call() {
        let a = database().await;
        let b = database().await;
        assert_ne!(a.name, b.name);
        let mut conn = PgConnection::connect(&a.url).await.unwrap();
        let name: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(name, a.name);
    }
}
