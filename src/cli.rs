//! The subcommands, and the dispatch from a parsed command line to the code that
//! does the work.
//!
//! Exit codes: 0 when everything asked for was done; 1 when the command ran but
//! something failed or differs (a key not reconciled, `verify` found differences);
//! 2 for bad input (configuration, credentials, arguments).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::json;

use crate::config::{Config, Needs};
use crate::ops::verify;
use crate::reconcile::{Outcome, Reconciler};
use crate::{aws, daemon, metrics};

/// Keeps an S3 bucket in one AWS partition in sync with a bucket in another.
#[derive(Debug, Parser)]
#[command(name = "xpsync", version, about)]
pub struct Cli {
    /// TOML configuration file; every setting can also come from XPSYNC_<TABLE>__<KEY>.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: consume the queue, reconcile keys, serve /healthz, /readyz, /metrics.
    Run,
    /// Reconcile the given source keys now and print one JSON line per key.
    Sync {
        /// Source keys, exactly as stored (not URL-encoded).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List both sides and report keys missing, extra or different; exit 1 if any.
    Verify {
        /// Only keys under this source prefix.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Validate the configuration and print the effective settings, secrets redacted.
    CheckConfig,
    /// GET the local /healthz; exit 0 if healthy, 1 if not (for container health checks).
    Healthcheck {
        /// Default: /healthz on the port of server.listen, on 127.0.0.1.
        #[arg(long)]
        url: Option<String>,
    },
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let needs = match cli.command {
        Command::Healthcheck { url } => return healthcheck(cli.config.as_deref(), url),
        Command::Run => Needs::BucketsAndQueue,
        Command::Sync { .. } | Command::Verify { .. } | Command::CheckConfig => Needs::Buckets,
    };
    let config = Config::load_valid(cli.config.as_deref(), needs)?;
    init_logging(&config);
    metrics::init();
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config.to_redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            daemon::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { keys } => sync(config, keys).await,
        Command::Verify { prefix } => verify(config, &prefix).await,
        Command::Healthcheck { .. } => {
            unreachable!("handled before the configuration is validated")
        }
    }
}

async fn sync(config: Config, keys: Vec<String>) -> anyhow::Result<ExitCode> {
    let config = Arc::new(config);
    let (source, target) = aws::connect(&config).await?;
    let reconciler = Reconciler::new(source, target, Arc::clone(&config));
    let mut reports = futures::stream::iter(keys)
        .map(|key| {
            let reconciler = reconciler.clone();
            async move { reconciler.reconcile(&key).await }
        })
        .buffered(config.transfer.max_objects);
    let mut failed = 0;
    let mut stdout = std::io::stdout().lock();
    while let Some(report) = reports.next().await {
        let mut line = json!({
            "key": report.key,
            "outcome": report.outcome,
            "bytes": report.bytes,
            "bytes_sent": report.bytes_sent,
            "parts_reused": report.parts_reused,
            "method": report.method,
            "etag": report.etag,
            "duration_ms": report.duration.as_millis() as u64,
        });
        if let Some(error) = &report.error {
            failed += 1;
            line["error"] = json!(error.to_string());
        }
        debug_assert_eq!(report.error.is_some(), report.outcome == Outcome::Failed);
        writeln!(stdout, "{line}").context("writing to stdout")?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(config: Config, prefix: &str) -> anyhow::Result<ExitCode> {
    let (source, target) = aws::connect(&config).await?;
    let mut stdout = std::io::stdout().lock();
    let summary = verify::verify(&source, &target, &config, prefix, |difference| {
        // A closed stdout must not stop the comparison; the summary still decides the exit code.
        let _ = writeln!(stdout, "{}", json!(difference));
    })
    .await?;
    writeln!(stdout, "{}", json!({ "summary": summary })).context("writing to stdout")?;
    Ok(if summary.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Needs no valid configuration: only `server.listen`, to find the port.
fn healthcheck(
    config_file: Option<&std::path::Path>,
    url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let url = match url {
        Some(url) => url,
        None => {
            let listen = Config::load(config_file)
                .map(|c| c.server.listen)
                .unwrap_or_else(|_| crate::config::ServerConfig::default().listen);
            let port = listen
                .rsplit_once(':')
                .map(|(_, port)| port.to_owned())
                .context("server.listen has no port")?;
            format!("http://127.0.0.1:{port}/healthz")
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(&url).call() {
        Ok(response) if response.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(response) => {
            eprintln!("xpsync: {url} answered {}", response.status());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("xpsync: {url}: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Logs go to stderr (stdout carries command output), as JSON or text.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if config.log.format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
