//! Service configuration: built-in defaults, then an optional TOML file (the
//! path in `RAPPORT_CONFIG`), then `RAPPORT_*` environment variables, each
//! overriding the one before. Validated at start; every error names the
//! setting and its environment variable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal (development).
    #[default]
    Pretty,
    /// One JSON object per line (production).
    Json,
}

/// Everything one service process needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// `RAPPORT_LISTEN`: address the gRPC server binds, e.g. `0.0.0.0:50052`.
    pub listen: SocketAddr,
    /// `RAPPORT_METRICS_LISTEN`: serve Prometheus metrics on this address
    /// (`/metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// `RAPPORT_DATABASE_URL`: PostgreSQL URL this service connects with.
    pub database_url: String,
    /// `RAPPORT_DB_MAX_CONNECTIONS`: size of the connection pool.
    pub db_max_connections: u32,
    /// `RAPPORT_LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `RAPPORT_LOG`: tracing filter directives, e.g. `info,rapport_profile=debug`.
    pub log: String,
    /// `RAPPORT_INTERNAL_TOKEN`: the credential the gateway and peer services
    /// present on internal calls (at least 16 characters).
    pub internal_token: Option<String>,
    /// `RAPPORT_REQUIRE_INTERNAL_AUTH`: refuse calls without the internal
    /// credential. Only `rapport dev` turns this off, for its direct ports.
    pub require_internal_auth: bool,
    /// `RAPPORT_MAX_MESSAGE_BYTES`: largest request or response message.
    pub max_message_bytes: usize,
    /// `RAPPORT_MAX_REQUEST_BYTES`: gateway only: the largest request message
    /// it forwards; a larger one is refused at the gateway with
    /// RESOURCE_EXHAUSTED before it reaches a service.
    pub max_request_bytes: usize,
    /// `RAPPORT_AUDIT_RETENTION_DAYS`: gateway only: how long the audit trail
    /// (`AdminService.ListAuditEvents`) keeps each event.
    pub audit_retention_days: u32,
    /// `RAPPORT_REQUEST_TIMEOUT_MS`: upper bound on any call, whatever
    /// deadline the client sets (a shorter client deadline wins), except
    /// client-streaming uploads and the long runs FitModel and ScoreCustomers,
    /// which end at the client's deadline only.
    pub request_timeout_ms: u64,
    /// `RAPPORT_SHUTDOWN_GRACE_MS`: how long in-flight calls may finish after
    /// SIGTERM or Ctrl-C before the process exits anyway.
    pub shutdown_grace_ms: u64,
    /// `RAPPORT_PAGE_TOKEN_SECRET`: key that signs page tokens. Replicas of a
    /// service must share it; when absent a random one is made at start.
    pub page_token_secret: Option<String>,
    /// `RAPPORT_GRPC_WEB_ORIGINS`: the gateway also serves gRPC-Web to
    /// browsers from these origins (comma-separated; `*` for any). Off when unset.
    pub grpc_web_origins: Option<String>,
    /// `RAPPORT_PROFILE_URL`: where the profile service is, for its peers.
    pub profile_url: Option<String>,
    /// `RAPPORT_INTERACTION_URL`: where the interaction service is.
    pub interaction_url: Option<String>,
    /// `RAPPORT_SEGMENTATION_URL`: where the segmentation service is.
    pub segmentation_url: Option<String>,
    /// `RAPPORT_VALUATION_URL`: where the valuation service is.
    pub valuation_url: Option<String>,
    /// `RAPPORT_ENGAGEMENT_URL`: where the engagement service is.
    pub engagement_url: Option<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics_listen: None,
            database_url: String::new(),
            db_max_connections: 16,
            log_format: LogFormat::Pretty,
            log: "info".into(),
            internal_token: None,
            require_internal_auth: true,
            max_message_bytes: 8 * 1024 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            audit_retention_days: 90,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 20_000,
            page_token_secret: None,
            grpc_web_origins: None,
            profile_url: None,
            interaction_url: None,
            segmentation_url: None,
            valuation_url: None,
            engagement_url: None,
        }
    }
}

/// A configuration that cannot be used, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl ServiceConfig {
    /// Loads defaults < `RAPPORT_CONFIG` file < `RAPPORT_*` environment, then validates.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("RAPPORT_CONFIG").ok();
        Self::load_from(file.as_deref().map(Path::new), Env::prefixed("RAPPORT_"))
    }

    /// Like [`ServiceConfig::load`] with an explicit file and environment provider.
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServiceConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "RAPPORT_CONFIG names {}, which does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only this process's settings: other RAPPORT_* variables (those of
        // `rapport dev` or the test harness) are not errors here.
        let known: Vec<String> = match serde_json::to_value(ServiceConfig::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let env = env.filter(move |k| known.iter().any(|n| k == n.as_str()));
        let config: ServiceConfig = figment.merge(env).extract().map_err(|e| {
            let key = e.path.join(".");
            let var = if key.is_empty() {
                String::new()
            } else {
                format!(
                    " (setting `{key}`, environment variable RAPPORT_{})",
                    key.to_uppercase()
                )
            };
            ConfigError(format!("{}{var}", e.kind))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the first bad one is reported by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.is_empty() {
            return Err(ConfigError(
                "RAPPORT_DATABASE_URL (database_url) is required: a postgres:// URL".into(),
            ));
        }
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "RAPPORT_DATABASE_URL (database_url) must start with postgres:// or postgresql://"
                    .into(),
            ));
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError(
                "RAPPORT_DB_MAX_CONNECTIONS (db_max_connections) must be at least 1".into(),
            ));
        }
        if self.require_internal_auth {
            match &self.internal_token {
                None => {
                    return Err(ConfigError(
                        "RAPPORT_INTERNAL_TOKEN (internal_token) is required while RAPPORT_REQUIRE_INTERNAL_AUTH is true".into(),
                    ));
                }
                Some(t) if t.len() < 16 => {
                    return Err(ConfigError(
                        "RAPPORT_INTERNAL_TOKEN (internal_token) must be at least 16 characters"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError(
                "RAPPORT_MAX_MESSAGE_BYTES (max_message_bytes) must be at least 1024".into(),
            ));
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError(
                "RAPPORT_MAX_REQUEST_BYTES (max_request_bytes) must be at least 1024".into(),
            ));
        }
        if !(1..=3650).contains(&self.audit_retention_days) {
            return Err(ConfigError(
                "RAPPORT_AUDIT_RETENTION_DAYS (audit_retention_days) must be from 1 to 3650".into(),
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError(
                "RAPPORT_REQUEST_TIMEOUT_MS (request_timeout_ms) must be positive".into(),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return Err(ConfigError(format!(
                "RAPPORT_LOG (log) is not a valid filter: {:?}",
                self.log
            )));
        }
        Ok(())
    }

    /// The unary request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
// figment's Jail returns its large error type; it only ever fails a test.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        // figment's Jail isolates the environment for the closure.
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(f());
            Ok(())
        });
        out.expect("closure ran")
    }

    #[test]
    fn env_overrides_defaults() {
        let cfg = with_env(
            &[
                ("RAPPORT_DATABASE_URL", "postgres://localhost/rapport"),
                ("RAPPORT_LISTEN", "0.0.0.0:6000"),
                ("RAPPORT_INTERNAL_TOKEN", "0123456789abcdef"),
                ("RAPPORT_LOG_FORMAT", "json"),
            ],
            ServiceConfig::load,
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 6000);
        assert_eq!(cfg.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = with_env(
            &[
                ("RAPPORT_DATABASE_URL", "postgres://localhost/rapport"),
                ("RAPPORT_LISTEN", "not-an-address"),
                ("RAPPORT_REQUIRE_INTERNAL_AUTH", "false"),
            ],
            ServiceConfig::load,
        )
        .unwrap_err();
        assert!(err.to_string().contains("RAPPORT_LISTEN"), "{err}");

        let err = with_env(
            &[("RAPPORT_DATABASE_URL", "postgres://x/y")],
            ServiceConfig::load,
        )
        .unwrap_err();
        assert!(err.to_string().contains("RAPPORT_INTERNAL_TOKEN"), "{err}");

        let err = with_env(&[], ServiceConfig::load).unwrap_err();
        assert!(err.to_string().contains("RAPPORT_DATABASE_URL"), "{err}");
    }

    #[test]
    fn other_rapport_variables_are_not_this_process_settings() {
        let cfg = with_env(
            &[
                ("RAPPORT_DATABASE_URL", "postgres://localhost/rapport"),
                ("RAPPORT_REQUIRE_INTERNAL_AUTH", "false"),
                ("RAPPORT_DEV_API_KEY", "whatever"),
                ("RAPPORT_TEST_DATABASE_URL", "postgres://elsewhere/db"),
            ],
            ServiceConfig::load,
        )
        .unwrap();
        assert_eq!(cfg.database_url, "postgres://localhost/rapport");
    }

    #[test]
    fn file_then_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rapport.toml",
                "database_url = \"postgres://file/db\"\nrequire_internal_auth = false\nlog = \"debug\"\n",
            )?;
            jail.set_env("RAPPORT_LOG", "warn");
            let cfg = ServiceConfig::load_from(
                Some(Path::new("rapport.toml")),
                Env::prefixed("RAPPORT_"),
            )
            .unwrap();
            assert_eq!(cfg.database_url, "postgres://file/db");
            assert_eq!(cfg.log, "warn");
            Ok(())
        });
    }
}
