use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // sqlx::migrate! embeds the migration files; rebuild when they change.
    println!("cargo:rerun-if-changed=migrations");

    // A feed service for the kit's own tests (tests/feed.rs), so change feeds
    // are tested over real gRPC without any product service.
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let test_protos = manifest.join("tests/proto");
    let contracts = manifest.join("../../proto");
    let file = test_protos.join("rapport/kittest/v1/feed_test.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&test_protos, &contracts])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("kittest");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_client(true)
        .build_server(true)
        .extern_path(".rapport.common.v1", "::rapport_proto::rapport::common::v1")
        .compile_fds(fds)?;
    Ok(())
}
