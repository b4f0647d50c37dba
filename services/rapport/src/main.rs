//! `rapport`: one binary for every Rapport service.
//!
//! * `rapport dev` — the whole platform on localhost, with an embedded
//!   throwaway-friendly PostgreSQL unless a database URL is given.
//! * `rapport serve <service>` — one service from configuration, as a
//!   container runs it.
//! * `rapport migrate [<service>]` — creates schemas and roles, applies migrations.

mod dev;
mod services;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rapport_kit::config::ServiceConfig;
use rapport_kit::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    name = "rapport",
    version,
    about = "Rapport: a customer-relationship platform of gRPC services."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run every service and the gateway on localhost, with an embedded PostgreSQL
    /// unless --database-url is given.
    Dev(dev::DevArgs),
    /// Run one service (profile, interaction, segmentation, valuation or gateway)
    /// configured by RAPPORT_* environment variables and the optional RAPPORT_CONFIG file.
    Serve {
        /// The service to run.
        #[arg(value_parser = ["profile", "interaction", "segmentation", "valuation", "gateway"])]
        service: String,
    },
    /// Create each service's role and schema when missing and apply its migrations.
    Migrate {
        /// Only this service (default: all of them).
        #[arg(value_parser = ["profile", "interaction", "segmentation", "valuation", "gateway"])]
        service: Option<String>,
        /// An administrative PostgreSQL URL (a role that may create roles and schemas).
        #[arg(long, env = "RAPPORT_DATABASE_URL")]
        database_url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rapport: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Serve { service } => serve(&service).await,
            Command::Migrate {
                service,
                database_url,
            } => {
                let _telemetry =
                    rapport_kit::telemetry::init("migrate", Default::default(), "info");
                let selected: Vec<_> = match service {
                    Some(name) => services::by_name(&name).into_iter().collect(),
                    None => services::ALL.to_vec(),
                };
                services::migrate(&database_url, &selected).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rapport: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(name: &str) -> anyhow::Result<()> {
    let service =
        services::by_name(name).ok_or_else(|| anyhow::anyhow!("unknown service {name}"))?;
    let config = ServiceConfig::load()?;
    let _telemetry = rapport_kit::telemetry::init(service.name, config.log_format, &config.log);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (RAPPORT_LISTEN): {e}", config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    rapport_kit::server::run_service(
        service.name,
        service.schema,
        &config,
        listener,
        shutdown,
        |b, rt| (service.register)(b, rt),
    )
    .await?;
    Ok(())
}
