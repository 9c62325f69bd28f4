//! The subcommands, and the dispatch from a parsed command line to the code that
//! does the work.
//!
//! Exit codes: 0 when everything asked for was done; 1 when the command ran but
//! something failed or differs (a key not reconciled, `verify` found differences,
//! a listing or a queue failing mid-run); 2 for bad input (configuration,
//! credentials, arguments). [`exit_code`] decides it for an error, by its type.
//!
//! This file holds the clap definitions and the dispatch; what each command prints
//! is in [`output`] (sync, verify, backfill, adopt), [`dlq`] and [`health`].

mod dlq;
mod health;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Needs};
use crate::ops::{adopt, backfill};
use crate::{aws, daemon, metrics};

/// Keeps an S3 bucket in one AWS partition in sync with a bucket in another.
#[derive(Debug, Parser)]
#[command(name = "xpsync", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// TOML configuration file; every setting can also come from XPSYNC_<TABLE>__<KEY>.
    #[arg(long, global = true, value_name = "FILE", env = "XPSYNC_CONFIG")]
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
        /// The route of the keys; needed when several are configured.
        #[arg(long)]
        route: Option<String>,
    },
    /// List both sides and report keys missing, extra or different; exit 1 if any.
    Verify {
        /// Only keys under this source prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Report incomplete uploads on the target begun longer ago than this (they
        /// cost storage until aborted; see the README's lifecycle rule).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        stale_uploads_after: std::time::Duration,
        /// Compare keys of equal size whose ETags differ by their bytes, along the
        /// target's part layout (reads the source; no bytes cross the border): a copy
        /// cut with another part size then counts as the same. Keys found the same
        /// are also compared by their additional checksums where both sides keep one.
        #[arg(long)]
        deep: bool,
        /// Only this route. Default: every route, one after the other.
        #[arg(long)]
        route: Option<String>,
    },
    /// List the source, compare with the target, and enqueue or copy the keys that differ.
    Backfill {
        /// Only keys under this source prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// enqueue: send a message per key for the daemons; copy: reconcile here.
        #[arg(long, value_enum, default_value = "enqueue")]
        mode: backfill::Mode,
        /// Only list the keys that differ (JSON lines); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Copies (copy mode) or message batches (enqueue mode) at once.
        /// Default: transfer.max_objects.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Leave out source objects written less than this long ago (e.g. 15m):
        /// their events are still on the way, so they are not drift.
        #[arg(long, value_parser = humantime::parse_duration)]
        min_age: Option<std::time::Duration>,
        /// Also print the summary in CloudWatch's embedded metric format (namespace
        /// xpsync/sweep): DifferingKeys, DifferingBytes, Enqueued, Failed.
        #[arg(long)]
        emf: bool,
        /// Instead of copying, adopt copies made by another tool in another part
        /// layout: each target copy of equal size whose ETag differs is checked by
        /// reading the source along the target's layout, and where the bytes match,
        /// the source's ETag and description are recorded on it (a copy within the
        /// target partition). No object bytes cross the border.
        #[arg(long, conflicts_with_all = ["dry_run", "min_age", "emf"])]
        adopt: bool,
        /// With --adopt: target copies under SSE-KMS have no ETag to check against;
        /// adopt them when their size is equal and they were written no earlier
        /// than the source object.
        #[arg(long, requires = "adopt")]
        trust_kms_size_and_time: bool,
        /// Only this route. Default: every route, one after the other.
        #[arg(long)]
        route: Option<String>,
    },
    /// The dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
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

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show dead-lettered messages without consuming them.
    Peek {
        /// At most this many messages.
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move dead-lettered messages back to the main queue (send, then delete).
    Replay {
        /// At most this many messages.
        #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
        max: usize,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only messages naming a key under this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Only messages of this route's keys.
        #[arg(long)]
        route: Option<String>,
    },
}

const EXIT_CODES: &str = "Exit codes:
  0  everything asked for was done
  1  the command ran, but something failed or differs (a key not reconciled, verify
     found differences, a listing or the queue failed mid-run)
  2  bad input: configuration, credentials, arguments

Logs: log.level, or RUST_LOG when set.";

/// Input the command cannot run with: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The exit code for a command that ended in `error`: 2 for bad input, 1 for a
/// failure while running.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let bad_input = error.chain().any(|cause| {
        cause.is::<crate::config::ConfigError>()
            || cause.is::<aws::AwsError>()
            || cause.is::<BadInput>()
    });
    if bad_input {
        2
    } else {
        1
    }
}

/// Whether fatal errors are printed as JSON (`log.format = "json"`, once the
/// configuration has been read).
static JSON_ERRORS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Prints the error that ended the command on stderr, as JSON where logs are.
pub fn print_fatal(error: &anyhow::Error, code: u8) {
    if JSON_ERRORS.get() == Some(&true) {
        let line = json!({
            "timestamp": aws_sdk_s3::primitives::DateTime::from(std::time::SystemTime::now())
                .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
                .unwrap_or_default(),
            "level": "ERROR",
            "message": format!("{error:#}"),
            "exit_code": code,
        });
        eprintln!("{line}");
    } else {
        eprintln!("xpsync: {error:#}");
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let needs = match cli.command {
        Command::Healthcheck { url } => return health::healthcheck(cli.config.as_deref(), url),
        Command::Run => Needs::BucketsAndQueue,
        Command::Backfill {
            mode,
            dry_run,
            adopt,
            ..
        } => {
            if mode == backfill::Mode::Enqueue && !dry_run && !adopt {
                Needs::BucketsAndQueue
            } else {
                Needs::Buckets
            }
        }
        Command::Dlq { .. } => Needs::Queue,
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
            let listener = tokio::net::TcpListener::bind(&config.server.listen)
                .await
                .with_context(|| {
                    format!("cannot listen on server.listen = {}", config.server.listen)
                })?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            daemon::run(config, listener, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { keys, route } => {
            let route = config.one_route(route.as_deref()).map_err(BadInput)?;
            output::sync(route, keys).await
        }
        Command::Backfill {
            prefix,
            mode,
            dry_run,
            concurrency,
            min_age,
            emf,
            adopt,
            trust_kms_size_and_time,
            route,
        } => {
            let mut clean = true;
            for (route, prefix) in routes_under(&config, route.as_deref(), &prefix)? {
                let code = if adopt {
                    let options = adopt::AdoptOptions {
                        concurrency: concurrency.unwrap_or(config.transfer.max_objects),
                        trust_kms_size_and_time,
                    };
                    output::adopt(route, &prefix, options).await?
                } else {
                    let options = output::BackfillOptions {
                        mode,
                        dry_run,
                        concurrency,
                        min_age,
                        emf,
                    };
                    output::backfill(route, &prefix, options).await?
                };
                clean &= code == ExitCode::SUCCESS;
            }
            Ok(output::exit(clean))
        }
        Command::Dlq { command } => dlq::dlq(config, command).await,
        Command::Verify {
            prefix,
            stale_uploads_after,
            deep,
            route,
        } => {
            let mut clean = true;
            for (route, prefix) in routes_under(&config, route.as_deref(), &prefix)? {
                let code = output::verify(route, &prefix, stale_uploads_after, deep).await?;
                clean &= code == ExitCode::SUCCESS;
            }
            Ok(output::exit(clean))
        }
        Command::Healthcheck { .. } => {
            unreachable!("handled before the configuration is validated")
        }
    }
}

/// The routes `--route` names (every route without it), each with the source
/// prefix its listing takes: `--prefix` within the route's own. A route that
/// `--prefix` lies outside of is left out.
fn routes_under(
    config: &Config,
    route: Option<&str>,
    prefix: &str,
) -> Result<Vec<(Config, String)>, BadInput> {
    let routes = config.routes_named(route).map_err(BadInput)?;
    Ok(routes
        .into_iter()
        .filter_map(|route| {
            let prefix = route.listing_prefix(prefix)?;
            Some((route, prefix))
        })
        .collect())
}

/// Cancels `shutdown` on SIGTERM (ECS stopping the task) or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(signal = name, "stopping");
    shutdown.cancel();
}

/// Logs go to stderr (stdout carries command output), as JSON or text, filtered by
/// `RUST_LOG` when it is set, else by `log.level`.
fn init_logging(config: &Config) {
    let _ = JSON_ERRORS.set(config.log.format == "json");
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            tracing_subscriber::EnvFilter::try_new(directives)
        }
        _ => tracing_subscriber::EnvFilter::try_new(&config.log.level),
    }
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
