use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // sqlx::migrate! embeds the migration files; rebuild when they change.
    println!("cargo:rerun-if-changed=migrations");

    // A backend for the gateway's own tests (tests/forwarding.rs): one method
    // of each streaming kind.
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = manifest.join("tests/proto");
    let file = protos.join("rapport/gwtest/v1/echo.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&protos])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("gwtest");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
