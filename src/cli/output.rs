//! What `sync`, `verify`, `backfill` and `adopt` print: one JSON line per key or
//! difference on stdout, then a summary; the exit code says whether all was well.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;

use crate::config::Config;
use crate::ops::{adopt, backfill, verify, Ops};
use crate::queue::Queue;
use crate::reconcile::{Hint, Outcome, Tags};

/// 0 when all was well, else 1.
pub(super) fn exit(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(super) async fn sync(config: Config, keys: Vec<String>) -> anyhow::Result<ExitCode> {
    let ops = Ops::connect(config).await?;
    let reconciler = ops.reconciler();
    let mut reports = futures::stream::iter(keys)
        .map(|key| {
            let reconciler = reconciler.clone();
            async move {
                reconciler
                    .reconcile(&key, Hint::Nothing, Tags::Compare)
                    .await
            }
        })
        .buffered(ops.config.transfer.max_objects);
    let mut failed = 0;
    let mut stdout = std::io::stdout().lock();
    while let Some(report) = reports.next().await {
        failed += usize::from(report.outcome() == Outcome::Failed);
        writeln!(stdout, "{}", report.to_json()).context("writing to stdout")?;
    }
    Ok(exit(failed == 0))
}

pub(super) async fn verify(
    config: Config,
    prefix: &str,
    stale_uploads_after: std::time::Duration,
    deep: bool,
) -> anyhow::Result<ExitCode> {
    let ops = Ops::connect(config).await?;
    let mut stdout = std::io::stdout().lock();
    let mut summary = verify::verify(&ops, prefix, deep, |difference| {
        // A closed stdout must not stop the comparison; the summary still decides the exit code.
        let _ = writeln!(stdout, "{}", json!(difference));
    })
    .await?;
    let target_prefix = ops.target_key(prefix);
    let stale = verify::stale_uploads(&ops.target, &target_prefix, stale_uploads_after).await?;
    for upload in &stale {
        writeln!(stdout, "{}", json!({ "stale_upload": upload })).context("writing to stdout")?;
    }
    summary.stale_uploads = stale.len() as u64;
    let route = &ops.config.scope.name;
    writeln!(stdout, "{}", json!({ "summary": summary, "route": route }))
        .context("writing to stdout")?;
    Ok(exit(summary.clean()))
}

pub(super) async fn adopt(
    config: Config,
    prefix: &str,
    options: adopt::AdoptOptions,
) -> anyhow::Result<ExitCode> {
    let ops = Ops::connect(config).await?;
    let mut stdout = std::io::stdout().lock();
    let summary = adopt::adopt(&ops, prefix, options, |line| {
        let _ = writeln!(stdout, "{line}");
    })
    .await?;
    let route = &ops.config.scope.name;
    writeln!(stdout, "{}", json!({ "summary": summary, "route": route }))
        .context("writing to stdout")?;
    Ok(exit(summary.failed == 0))
}

/// `xpsync backfill`'s flags beyond the prefix.
pub(super) struct BackfillOptions {
    pub mode: backfill::Mode,
    pub dry_run: bool,
    pub concurrency: Option<usize>,
    pub min_age: Option<std::time::Duration>,
    pub emf: bool,
}

pub(super) async fn backfill(
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
    let ops = Ops::connect(config).await?;
    let config = &ops.config;
    let concurrency = concurrency.unwrap_or(config.transfer.max_objects).max(1);
    let reconciler = ops.reconciler().with_slots(concurrency);
    let queue = match (mode, dry_run) {
        (backfill::Mode::Enqueue, false) => Some(Queue::connect(config).await?),
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
    let summary = backfill::backfill(&ops, scope, |line| {
        let _ = writeln!(stdout, "{line}");
    })
    .await?;
    let route = &config.scope.name;
    writeln!(stdout, "{}", json!({ "summary": summary, "route": route }))
        .context("writing to stdout")?;
    if emf {
        writeln!(stdout, "{}", summary.to_emf(&config.source.bucket))
            .context("writing to stdout")?;
    }
    Ok(exit(summary.failed == 0))
}
