//! A PostgreSQL server run from the local installation: `rapport dev`'s
//! embedded database and the test suite's throwaway clusters.
//!
//! Binaries are found on PATH or under `/usr/lib/postgresql/<version>/bin`.
//! PostgreSQL refuses to run as root; when this process is root the server runs
//! as Debian's `postgres` user (through `setpriv`), owning its data directory.
//! The server is a child process tied to a dedicated thread with a parent-death
//! signal, so it never outlives this process.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH or under /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` (or run scripts/bootstrap.sh), or give a database URL"
    )]
    NotInstalled,
    /// Running as root without a `postgres` user to run the server as.
    #[error(
        "running as root, and there is no `postgres` user to run PostgreSQL as; install Debian's postgresql package or run as an ordinary user"
    )]
    NoPostgresUser,
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command.
        command: String,
        /// What it printed.
        detail: String,
    },
    /// The server did not become ready.
    #[error("PostgreSQL did not accept connections within {0:?}; see {1}")]
    NotReady(Duration, String),
    /// I/O.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The data directory (created and initialised when empty).
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1; a free one when `None`.
    pub port: Option<u16>,
    /// Throwaway mode for tests: no fsync, no synchronous commit. Never for data
    /// anyone wants to keep.
    pub throwaway: bool,
}

/// A running server. Stops it (fast shutdown) when dropped.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    pid: u32,
    data_dir: PathBuf,
    exited: std::sync::Mutex<mpsc::Receiver<()>>,
    stopped: bool,
}

/// The directory holding `initdb` and `postgres`.
pub fn bin_dir() -> Result<PathBuf, PgError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .ok_or(PgError::NotInstalled)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn postgres_user_exists() -> bool {
    Command::new("id")
        .args(["-u", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command for a PostgreSQL binary, run as `postgres` when we are root.
fn pg_command(bin: &Path, args: &[&str], pdeathsig: bool) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
        if pdeathsig {
            c.arg("--pdeathsig=TERM");
        }
        c.arg("--").arg(bin).args(args);
        c
    } else if pdeathsig {
        let mut c = Command::new("setpriv");
        c.arg("--pdeathsig=TERM").arg("--").arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn run(mut cmd: Command) -> Result<(), PgError> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            command: format!("{cmd:?}"),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

impl PgServer {
    /// Initialises the data directory when needed and starts the server.
    /// Blocks until it accepts connections (at most 60 s).
    pub fn start(opts: &PgOptions) -> Result<Self, PgError> {
        let bin = bin_dir()?;
        let root = is_root();
        if root && !postgres_user_exists() {
            return Err(PgError::NoPostgresUser);
        }
        let data = &opts.data_dir;
        std::fs::create_dir_all(data)?;
        if root {
            run({
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(data);
                c
            })?;
        }
        let data_str = data.to_string_lossy().to_string();
        if !data.join("PG_VERSION").exists() {
            let mut args = vec![
                "-D",
                data_str.as_str(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ];
            if opts.throwaway {
                args.push("--no-sync");
            }
            run(pg_command(&bin.join("initdb"), &args, false))?;
        }
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let port_s = port.to_string();
        let log_path = data.join("server.log");
        let mut args: Vec<String> = vec![
            "-D".into(),
            data_str.clone(),
            "-p".into(),
            port_s,
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            "max_connections=400".into(),
        ];
        if opts.throwaway {
            for s in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                // Bulk loads (benchmarks, demo data) keep their indexes in
                // memory and are not interrupted by checkpoints.
                "shared_buffers=512MB",
                "max_wal_size=4GB",
                // A fresh cluster creates its WAL segments as it goes;
                // zero-filling each one first is wasted work when nothing
                // is ever recovered (a long-running server recycles them).
                "wal_init_zero=off",
            ] {
                args.push("-c".into());
                args.push(s.into());
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let log_err = log.try_clone()?;
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = pg_command(&bin.join("postgres"), &arg_refs, true);
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);

        // Spawn from a thread that lives as long as the server: the parent-death
        // signal fires when the spawning thread ends, not only the process.
        let (pid_tx, pid_rx) = mpsc::channel::<io::Result<u32>>();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("postgres-{port}"))
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = child.wait();
                    let _ = exit_tx.send(());
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })?;
        let pid = pid_rx
            .recv()
            .map_err(|_| io::Error::other("postgres spawner thread ended"))??;
        let server = PgServer {
            port,
            pid,
            data_dir: data.clone(),
            exited: std::sync::Mutex::new(exit_rx),
            stopped: false,
        };
        server.wait_ready(&bin, Duration::from_secs(60), &log_path)?;
        Ok(server)
    }

    fn wait_ready(&self, bin: &Path, limit: Duration, log: &Path) -> Result<(), PgError> {
        let isready = bin.join("pg_isready");
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.exited.lock().is_ok_and(|rx| rx.try_recv().is_ok()) {
                return Err(PgError::Command {
                    command: "postgres".into(),
                    detail: format!(
                        "the server exited during start-up: {}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    ),
                });
            }
            let ok = Command::new(&isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(PgError::NotReady(limit, log.display().to_string()))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A superuser URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Fast shutdown: rolls back open transactions, checkpoints, exits. Waits
    /// up to 30 s, then kills the server.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let exited = self
            .exited
            .lock()
            .is_ok_and(|rx| rx.recv_timeout(Duration::from_secs(30)).is_ok());
        if !exited {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
