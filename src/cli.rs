//! The subcommands, and the dispatch from a parsed command line to the code that
//! does the work.
//!
//! Exit codes: 0 when everything asked for was done; 1 when the command ran but
//! something failed or differs (a key not reconciled, `verify` found differences,
//! a listing or a queue failing mid-run); 2 for bad input (configuration,
//! credentials, arguments). [`exit_code`] decides it for an error, by its type.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Needs};
use crate::ops::{adopt, backfill, dlq, verify};
use crate::queue::Queue;
use crate::reconcile::{Hint, Outcome, Reconciler, Tags};
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
        /// cut with another part size then counts as the same.
        #[arg(long)]
        deep: bool,
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
        Command::Healthcheck { url } => return healthcheck(cli.config.as_deref(), url),
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
        Command::Sync { keys } => sync(config, keys).await,
        Command::Backfill {
            prefix,
            mode,
            dry_run,
            concurrency,
            min_age,
            emf,
            adopt,
            trust_kms_size_and_time,
        } => {
            if adopt {
                let concurrency = concurrency.unwrap_or(config.transfer.max_objects);
                return run_adopt(config, &prefix, concurrency, trust_kms_size_and_time).await;
            }
            let options = BackfillOptions {
                mode,
                dry_run,
                concurrency,
                min_age,
                emf,
            };
            run_backfill(config, &prefix, options).await
        }
        Command::Dlq { command } => dlq(config, command).await,
        Command::Verify {
            prefix,
            stale_uploads_after,
            deep,
        } => verify(config, &prefix, stale_uploads_after, deep).await,
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
            async move {
                reconciler
                    .reconcile(&key, Hint::Nothing, Tags::Compare)
                    .await
            }
        })
        .buffered(config.transfer.max_objects);
    let mut failed = 0;
    let mut stdout = std::io::stdout().lock();
    while let Some(report) = reports.next().await {
        failed += usize::from(report.outcome() == Outcome::Failed);
        writeln!(stdout, "{}", report.to_json()).context("writing to stdout")?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(
    config: Config,
    prefix: &str,
    stale_uploads_after: std::time::Duration,
    deep: bool,
) -> anyhow::Result<ExitCode> {
    let (source, target) = aws::connect(&config).await?;
    let mut stdout = std::io::stdout().lock();
    let mut summary = verify::verify(&source, &target, &config, prefix, deep, |difference| {
        // A closed stdout must not stop the comparison; the summary still decides the exit code.
        let _ = writeln!(stdout, "{}", json!(difference));
    })
    .await?;
    let target_prefix = format!("{}{prefix}", config.target.key_prefix);
    let stale = verify::stale_uploads(&target, &target_prefix, stale_uploads_after).await?;
    for upload in &stale {
        writeln!(stdout, "{}", json!({ "stale_upload": upload })).context("writing to stdout")?;
    }
    summary.stale_uploads = stale.len() as u64;
    writeln!(stdout, "{}", json!({ "summary": summary })).context("writing to stdout")?;
    Ok(if summary.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_adopt(
    config: Config,
    prefix: &str,
    concurrency: usize,
    trust_kms: bool,
) -> anyhow::Result<ExitCode> {
    let config = Arc::new(config);
    let (source, target) = aws::connect(&config).await?;
    let reconciler = Reconciler::new(source.clone(), target.clone(), Arc::clone(&config));
    let mut stdout = std::io::stdout().lock();
    let summary = adopt::adopt(
        &reconciler,
        (&source, &target),
        &config,
        prefix,
        (concurrency, trust_kms),
        |line| {
            let _ = writeln!(stdout, "{line}");
        },
    )
    .await?;
    writeln!(stdout, "{}", json!({ "summary": summary })).context("writing to stdout")?;
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `xpsync backfill`'s flags beyond the prefix.
struct BackfillOptions {
    mode: backfill::Mode,
    dry_run: bool,
    concurrency: Option<usize>,
    min_age: Option<std::time::Duration>,
    emf: bool,
}

async fn run_backfill(
    config: Config,
    prefix: &str,
    options: BackfillOptions,
) -> anyhow::Result<ExitCode> {
    let BackfillOptions {
        mode,
        dry_run,
        concurrency,
        min_age,
        emf,
    } = options;
    let config = Arc::new(config);
    let concurrency = concurrency.unwrap_or(config.transfer.max_objects).max(1);
    let (source, target) = aws::connect(&config).await?;
    let reconciler = Reconciler::new(source.clone(), target.clone(), Arc::clone(&config));
    let queue = match (mode, dry_run) {
        (backfill::Mode::Enqueue, false) => Some(Queue::connect(&config).await?),
        _ => None,
    };
    let action = match (&queue, dry_run) {
        (_, true) => backfill::Action::DryRun,
        (Some(queue), false) => backfill::Action::Enqueue(queue),
        (None, false) => backfill::Action::Copy(&reconciler),
    };
    let mut stdout = std::io::stdout().lock();
    let scope = backfill::Scope {
        prefix,
        action,
        concurrency,
        min_age,
    };
    let summary = backfill::backfill(&source, &target, &config, scope, |line| {
        let _ = writeln!(stdout, "{line}");
    })
    .await?;
    writeln!(stdout, "{}", json!({ "summary": summary })).context("writing to stdout")?;
    if emf {
        writeln!(stdout, "{}", summary.to_emf(&config.source.bucket))
            .context("writing to stdout")?;
    }
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn dlq(config: Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let main = Queue::connect(&config).await?;
    let dead_letters = main.dead_letter_queue().ok_or_else(|| {
        BadInput(
            "the queue has no dead-letter queue: set queue.dead_letter_url, or give the queue a RedrivePolicy"
                .into(),
        )
    })?;
    let bucket = config.source.bucket.as_str();
    let mut stdout = std::io::stdout().lock();
    match command {
        DlqCommand::Peek { max, json } => {
            let peeked = dlq::peek(&dead_letters, bucket, max).await?;
            if json {
                for p in &peeked {
                    writeln!(stdout, "{}", serde_json::json!(p))?;
                }
            } else {
                writeln!(
                    stdout,
                    "{:>8}  {:>8}  {:<40}  REASON",
                    "AGE", "RECEIVES", "KEYS"
                )?;
                for p in &peeked {
                    let age =
                        humantime::format_duration(std::time::Duration::from_secs(p.age_seconds));
                    let keys = if p.keys.is_empty() {
                        "-".to_owned()
                    } else {
                        p.keys.join(", ")
                    };
                    writeln!(
                        stdout,
                        "{:>8}  {:>8}  {:<40}  {}",
                        age.to_string(),
                        p.receive_count,
                        keys,
                        p.reason
                    )?;
                }
                writeln!(stdout, "{} message(s) shown; none consumed", peeked.len())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            max,
            dry_run,
            prefix,
        } => {
            let summary = dlq::replay(
                &main,
                &dead_letters,
                bucket,
                max,
                prefix.as_deref(),
                dry_run,
                |p, action| {
                    let _ = writeln!(
                        stdout,
                        "{}",
                        json!({"message_id": p.message_id, "keys": p.keys, "reason": p.reason, "action": action})
                    );
                },
            )
            .await?;
            writeln!(stdout, "{}", json!({ "summary": summary }))?;
            eprintln!(
                "{} {}, {} skipped, {} failed",
                if dry_run { "would move" } else { "moved" },
                summary.moved,
                summary.skipped,
                summary.failed
            );
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
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
