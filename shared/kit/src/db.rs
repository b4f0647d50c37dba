//! PostgreSQL: one schema and one role per service, pools, and migrations.
//!
//! Each service owns a schema of the same name (`profile`, `interaction`, …) and
//! a role `rapport_<service>` that owns it and has no rights anywhere else.
//! `rapport migrate` connects with an administrative URL, creates the role and
//! schema when missing, then applies the kit's migrations (the change feed
//! tables) and the service's own, all as the service role, so the service can
//! later run with nothing but its own rights.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

static KIT_MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where a service's data lives.
#[derive(Debug, Clone, Copy)]
pub struct SchemaSpec {
    /// The schema name, e.g. `profile`.
    pub schema: &'static str,
    /// The role that owns it, e.g. `rapport_profile`.
    pub role: &'static str,
    /// Extensions the service needs (created by the administrative connection).
    pub extensions: &'static [&'static str],
}

impl SchemaSpec {
    /// The conventional spec for a service: schema `name`, role `rapport_name`.
    pub const fn new(schema: &'static str, role: &'static str) -> Self {
        Self {
            schema,
            role,
            extensions: &[],
        }
    }

    /// The same spec, needing `extensions` too.
    pub const fn with_extensions(mut self, extensions: &'static [&'static str]) -> Self {
        self.extensions = extensions;
        self
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Opens a pool for the service. Each connection takes the service's role
/// (when the login user is not already that role) and searches only its schema.
pub async fn connect(
    url: &str,
    spec: SchemaSpec,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    connect_with(url.parse()?, spec, max_connections).await
}

/// Like [`connect`], with parsed connection options.
pub async fn connect_with(
    options: PgConnectOptions,
    spec: SchemaSpec,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    // Statements are planned once per connection, for an average tenant
    // (generic plans): the services run the same keyed statements thousands
    // of times a second, and planning each execution anew for its
    // parameters cost more than executing it (GetCustomer went from about
    // 900 to 1,800 calls/s on two cores). Analytical statements whose plan
    // depends on their values (segment evaluation) ask for custom plans in
    // their transaction (`custom_plans`).
    //
    // No JIT compilation: a generic plan's cost is estimated for the average
    // tenant, which on a large base is above PostgreSQL's JIT threshold, and
    // compiling took about 60 ms of every execution of a statement that ran
    // in 10 ms (the feed consumers' classification, once per batch).
    let options = options
        .application_name(&format!("rapport-{}", spec.schema))
        .options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                enter_schema(conn, spec).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

async fn enter_schema(conn: &mut PgConnection, spec: SchemaSpec) -> Result<(), sqlx::Error> {
    let user: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&mut *conn)
        .await?;
    if user != spec.role {
        exec(&mut *conn, format!("SET ROLE {}", ident(spec.role))).await?;
    }
    exec(
        &mut *conn,
        format!("SET search_path TO {}", ident(spec.schema)),
    )
    .await?;
    Ok(())
}

/// Creates the role and schema when missing, then applies the kit's and the
/// service's migrations as the service role. Idempotent; safe to run from
/// several processes at once.
pub async fn migrate(
    admin_url: &str,
    spec: SchemaSpec,
    migrator: &Migrator,
) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(admin_url).await?;
    ensure_role_and_schema(&mut conn, spec).await?;
    enter_schema(&mut conn, spec).await?;
    let mut kit = Migrator {
        migrations: KIT_MIGRATOR.migrations.clone(),
        ..Migrator::DEFAULT
    };
    kit.dangerous_set_table_name("_rapport_kit_migrations");
    kit.run(&mut conn)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    migrator
        .run(&mut conn)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    conn.close().await
}

async fn ensure_role_and_schema(
    conn: &mut PgConnection,
    spec: SchemaSpec,
) -> Result<(), sqlx::Error> {
    // Serialise concurrent migrators: CREATE ROLE and CREATE SCHEMA race otherwise.
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('rapport.migrate'))")
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(spec.role)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        // Roles are cluster-wide while the lock above is per database: another
        // database's migrator may create the role at the same moment.
        exec(
            &mut tx,
            format!(
                "DO $$ BEGIN CREATE ROLE {} LOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
                ident(spec.role)
            ),
        )
        .await?;
    }
    // The service logs in as its role; its password, when the operator gives
    // one, comes from RAPPORT_ROLE_PASSWORD_<SCHEMA> at migration time.
    let var = format!("RAPPORT_ROLE_PASSWORD_{}", spec.schema.to_uppercase());
    if let Some(password) = std::env::var(&var).ok().filter(|p| !p.is_empty()) {
        // Let PostgreSQL quote the role and the password.
        let sql: String =
            sqlx::query_scalar("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)")
                .bind(spec.role)
                .bind(&password)
                .fetch_one(&mut *tx)
                .await?;
        exec(&mut tx, sql).await?;
    }
    // The administrator must be able to act as the service role.
    let member: bool = sqlx::query_scalar("SELECT pg_has_role(current_user, $1, 'USAGE')")
        .bind(spec.role)
        .fetch_one(&mut *tx)
        .await?;
    if !member {
        exec(
            &mut tx,
            format!(
                "DO $$ BEGIN GRANT {} TO current_user; \
                 EXCEPTION WHEN unique_violation THEN NULL; END $$",
                ident(spec.role)
            ),
        )
        .await?;
    }
    exec(
        &mut tx,
        format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            ident(spec.schema),
            ident(spec.role)
        ),
    )
    .await?;
    exec(
        &mut tx,
        format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", ident(spec.schema)),
    )
    .await?;
    for ext in spec.extensions {
        exec(
            &mut tx,
            format!(
                "CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}",
                ident(ext),
                ident(spec.schema)
            ),
        )
        .await?;
    }
    tx.commit().await
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps the rest of the caller's transaction on indexes, whatever the
/// statistics say about the tenant.
///
/// Bulk writes look rows up by key in batches. While one tenant grows fast,
/// the statistics lag behind: a tenant that was not in a table when it was
/// last analysed is estimated at a row or so, and a plan made for that
/// estimate (scan the tenant's rows once per key of the batch) grows
/// quadratically as the tenant grows: an onboarding tenant's import ran 6 to
/// 10 s per batch of 1,000 until autovacuum analysed the table. Batch
/// lookups are written as one lateral index lookup per key; this keeps
/// the planner off sequential scans as well.
///
/// Joins are left to the planner. A batch `UPDATE ... FROM unnest(...)` of a
/// tenant the statistics do not know yet is still planned as if the tenant
/// had a row or so, and may hash the tenant's whole key for each batch. Two
/// cures were measured and made it worse: hash and merge joins turned off
/// here (the planner then rescanned a materialised copy of the tenant for
/// each key), and a `customer_id = ANY(batch)` bound (applied as a filter
/// over the tenant's rows). The cause is the missing statistics.
///
/// And no parallel workers: a plan made for the average tenant of a table
/// holding a large tenant asks for them even where the caller's tenant has
/// a few rows, and launching them on a busy machine took 100 to 160 ms per
/// scan (a consumer's batch classification spent 1.8 s per batch of a new
/// tenant's customers beside a 1,000,000-customer tenant, in workers that
/// found nothing). Transaction-scoped.
pub async fn prefer_key_lookups(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
                set_config('enable_seqscan', 'off', true),
                set_config('max_parallel_workers_per_gather', '0', true)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Plans the rest of the caller's transaction for its parameters' values
/// (custom plans): for analytical statements, such as a segment's rule over
/// a whole tenant, whose best plan depends on the values and whose
/// execution outweighs planning. Transaction-scoped.
pub async fn custom_plans(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether this process last found its database reachable (set by each
/// service's health probe, [`Probe`]). Tells a pool that is busy (every
/// connection in use: RESOURCE_EXHAUSTED, retry shortly) from a database
/// that is down (UNAVAILABLE) when an acquire times out.
static REACHABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Wakes the health probes at once (a call just met a broken connection).
static SUSPECT: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Whether the database was reachable at the last probe.
pub fn reachable() -> bool {
    REACHABLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Asks the health probes to check the database now: a call met a broken
/// connection, so the service may have to report NOT_SERVING before the
/// next scheduled probe.
pub fn suspect() {
    SUSPECT.notify_waiters();
}

/// Resolves when [`suspect`] is called.
pub async fn suspected() {
    SUSPECT.notified().await;
}

/// The health probe's own connection to the database, outside the pool: a
/// pool whose connections are all busy is not a database that is down, and
/// a restart, however fast, breaks this connection, so it is always seen.
pub struct Probe {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
}

impl Probe {
    /// A probe connecting as `pool` does.
    pub fn new(pool: &PgPool) -> Self {
        Self {
            options: (*pool.connect_options()).clone(),
            conn: None,
        }
    }

    /// True when the database answers `SELECT 1` within two seconds on the
    /// probe's connection (opened again when it was lost). Records the
    /// answer for [`reachable`].
    pub async fn check(&mut self) -> bool {
        let up = tokio::time::timeout(Duration::from_secs(2), async {
            if self.conn.is_none() {
                self.conn = Some(PgConnection::connect_with(&self.options).await?);
            }
            match &mut self.conn {
                Some(conn) => sqlx::query("SELECT 1").execute(conn).await.map(|_| ()),
                None => Ok(()),
            }
        })
        .await
        .is_ok_and(|r| r.is_ok());
        if !up {
            self.conn = None;
        }
        REACHABLE.store(up, std::sync::atomic::Ordering::Relaxed);
        up
    }
}

/// `url` with its database name replaced by `database`.
pub fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}
