//! Starts a throwaway PostgreSQL cluster for a whole test run and prints its
//! superuser URL on the first line of standard output; stops it (and deletes
//! its data) when standard input closes or on SIGTERM/Ctrl-C.
//!
//! Used by `scripts/test.sh`: `RAPPORT_TEST_DATABASE_URL` is set to the URL, so
//! every test binary shares one cluster and only creates its own databases.

use std::io::{Read, Write};

use rapport_kit::pg::{PgOptions, PgServer};

fn main() {
    let dir = match tempfile::Builder::new()
        .prefix("rapport-test-pg-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rapport-test-postgres: cannot create a temporary directory: {e}");
            std::process::exit(1);
        }
    };
    let server = match PgServer::start(&PgOptions {
        data_dir: dir.path().join("data"),
        port: None,
        throwaway: true,
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rapport-test-postgres: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", server.url("postgres"));
    let _ = std::io::stdout().flush();
    // Wait for standard input to close (the test script holds it open).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(server);
    drop(dir);
}
