//! `xpsync dlq peek` and `xpsync dlq replay`: what they print.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;

use super::output::exit;
use super::{BadInput, DlqCommand};
use crate::config::Config;
use crate::ops::dlq::{self, Peeked};
use crate::queue::Queue;

pub(super) async fn dlq(config: Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let main = Queue::connect(&config).await?;
    let dead_letters = main.dead_letter_queue().ok_or_else(|| {
        BadInput(
            "the queue has no dead-letter queue: set queue.dead_letter_url, or give the queue a RedrivePolicy"
                .into(),
        )
    })?;
    let routes = config.routes();
    match command {
        DlqCommand::Peek { max, json } => {
            let peeked = dlq::peek(&dead_letters, &routes, max).await?;
            print_peeked(&peeked, json)?;
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            max,
            dry_run,
            prefix,
            route,
        } => {
            if let Some(name) = &route {
                config.routes_named(Some(name)).map_err(BadInput)?;
            }
            let only = dlq::Only {
                route: route.as_deref(),
                prefix: prefix.as_deref(),
            };
            let mut stdout = std::io::stdout().lock();
            let summary = dlq::replay(
                &main,
                &dead_letters,
                &routes,
                max,
                only,
                dry_run,
                |p, action| {
                    let _ = writeln!(
                        stdout,
                        "{}",
                        json!({"message_id": p.message_id, "keys": p.keys, "route": p.route, "reason": p.reason, "action": action})
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
            Ok(exit(summary.failed == 0))
        }
    }
}

/// Dead letters as JSON lines, or as a table for a terminal.
fn print_peeked(peeked: &[Peeked], as_json: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if as_json {
        for p in peeked {
            writeln!(stdout, "{}", json!(p))?;
        }
        return Ok(());
    }
    writeln!(
        stdout,
        "{:>8}  {:>8}  {:<40}  REASON",
        "AGE", "RECEIVES", "KEYS"
    )?;
    for p in peeked {
        let age = humantime::format_duration(std::time::Duration::from_secs(p.age_seconds));
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
    writeln!(stdout, "{} message(s) shown; none consumed", peeked.len())
}
