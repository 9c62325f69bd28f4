//! Every metric xpsync exports, defined once.
//!
//! The metrics live in one process-wide registry, [`REGISTRY`], that `/metrics`
//! renders. Code elsewhere records through the typed statics below, never by name,
//! so a metric's name, help and labels are written in this file alone. Label values
//! come from small closed sets (outcomes, operations, sides, error kinds): never a
//! key or a bucket name, so cardinality stays bounded: each label's values are an
//! enum with its `ALL`, so [`init`] can start every series at zero.
//!
//! This module depends only on [`crate::error`]; the domain modules re-export the
//! label enums they speak in (`reconcile::Outcome`, `transfer::Method`).

pub mod emf;
mod labels;

pub use labels::*;

use std::sync::LazyLock;

use crate::error::ErrorKind;

use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The registry `/metrics` renders.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registers once");
    registry
});

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    REGISTRY
        .register(Box::new(collector.clone()))
        .expect("every metric is registered once");
    collector
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric"))
}

/// Objects reconciled, by outcome: copied, unchanged, deleted, absent, filtered, failed.
pub static OBJECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_objects_total",
        "Keys reconciled, by outcome and route",
        &["result", "route"],
    )
});

/// Object bytes written to the target, by route.
pub static BYTES_COPIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let help = "Object bytes written to the target and verified, by route";
    counter_vec("xpsync_bytes_copied_total", help, &["route"])
});

/// Bytes sent to the target whether or not the copy completed (retries included).
pub static BYTES_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "xpsync_bytes_sent_total",
            "Object bytes sent to the target, including parts of copies that failed or were retried",
        )
        .expect("valid metric"),
    )
});

/// Time copies waited for `transfer.max_bandwidth`.
pub static BANDWIDTH_LIMITED: LazyLock<Counter> = LazyLock::new(|| {
    let help = "Seconds copies waited for transfer.max_bandwidth, all copies together";
    register(Counter::new("xpsync_bandwidth_limited_seconds_total", help).expect("valid"))
});

/// From the event's time to the target verified, by route.
pub static REPLICATION_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "xpsync_replication_latency_seconds",
                "Time from the S3 event to the target copy verified, by route",
            )
            // Up to a day: a backlog after an outage must stay visible to the p99.
            .buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
                7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
            ]),
            &["route"],
        )
        .expect("valid metric"),
    )
});

/// Duration of one copy, by method: put or multipart.
pub static COPY_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "xpsync_copy_duration_seconds",
                "Duration of one object copy, by method",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            &["method"],
        )
        .expect("valid metric"),
    )
});

/// Objects being reconciled now.
pub static OBJECTS_IN_FLIGHT: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("xpsync_objects_in_flight", "Keys being reconciled now"));

/// Bytes of objects being copied now.
pub static BYTES_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "xpsync_bytes_in_flight",
        "Total size of the objects being copied now",
    )
});

/// Bytes reserved from the memory budget now.
pub static MEMORY_RESERVED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "xpsync_memory_reserved_bytes",
        "Object bytes reserved from transfer.memory_limit now",
    )
});

/// Queue messages handled, by result: deleted, retried, dead_lettered, ignored.
pub static MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_messages_total",
        "Queue messages handled, by result",
        &["result"],
    )
});

/// Approximate queue depths, by queue (main, dead_letter, ranges) and state (visible, in_flight, delayed).
pub static QUEUE_MESSAGES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "xpsync_queue_messages",
                "Approximate number of messages in the queues, by state",
            ),
            &["queue", "state"],
        )
        .expect("valid metric"),
    )
});

/// S3 requests, by side, operation and outcome (ok, or an error kind).
pub static S3_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_s3_requests_total",
        "S3 requests made, by side, operation and outcome",
        &["side", "operation", "outcome"],
    )
});

/// Errors, by stage and kind.
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_errors_total",
        "Errors, by the stage they happened in and their kind",
        &["stage", "kind"],
    )
});

/// Reads of a credentials secret, by result: ok, error.
pub static CREDENTIALS_REFRESHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_credentials_refreshes_total",
        "Reads of a credentials secret from Secrets Manager, by result",
        &["result"],
    )
});

/// Parts uploaded, by how: uploaded now, or reused from an interrupted upload.
pub static PARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_parts_total",
        "Multipart parts, by whether they were uploaded or reused from an interrupted upload",
        &["result"],
    )
});

/// 1 when `/readyz` says ready, else 0.
pub static READY: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "xpsync_ready",
        "1 when the worker is ready to take messages; 0 when starting, paused or shutting down",
    )
});

/// Times receiving was paused because every copy failed the same systemic way.
pub static BREAKER_TRIPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_breaker_trips_total",
        "Times receiving was paused by a systemic failure, by its kind",
        &["kind"],
    )
});

/// Reconciles started over, by why: the source changed mid-copy, or after the
/// write or delete (another writer).
pub static RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_reconcile_restarts_total",
        "Reconciles of a key started over, by reason",
        &["reason"],
    )
});

/// Range messages of split objects handled, by result.
pub static RANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_ranges_total",
        "Ranges of split objects handled, by result",
        &["result"],
    )
});

/// Split objects, by what happened: split, completed, ranges sent again, restarted.
pub static SPLITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_splits_total",
        "Objects copied by the whole fleet, by event",
        &["result"],
    )
});

pub static RESTORES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "xpsync_restores_total",
        "Archived source objects asked to be restored (replicate.archived = \"restore\"), by result",
        &["result"],
    )
});

/// Always 1, labelled with the version.
pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = register(
        IntGaugeVec::new(
            Opts::new("xpsync_build_info", "Always 1; the version of xpsync"),
            &["version"],
        )
        .expect("valid metric"),
    );
    g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    g
});

/// Touches every metric so that each appears in `/metrics` from the start, even at zero.
pub fn init() {
    LazyLock::force(&BUILD_INFO);
    for result in MessageResult::ALL {
        MESSAGES.with_label_values(&[result.as_str()]);
    }
    for method in Method::ALL {
        COPY_DURATION.with_label_values(&[method.as_str()]);
    }
    for result in PartResult::ALL {
        PARTS.with_label_values(&[result.as_str()]);
    }
    for result in RangeResult::ALL {
        RANGES.with_label_values(&[result.as_str()]);
    }
    for result in SplitResult::ALL {
        SPLITS.with_label_values(&[result.as_str()]);
    }
    for result in RestoreResult::ALL {
        RESTORES.with_label_values(&[result.as_str()]);
    }
    for reason in RestartReason::ALL {
        RESTARTS.with_label_values(&[reason.as_str()]);
    }
    for result in RefreshResult::ALL {
        CREDENTIALS_REFRESHES.with_label_values(&[result.as_str()]);
    }
    // A family without any series is not exported at all: start the ones alerts
    // and dashboards read from zero.
    for kind in ErrorKind::ALL {
        ERRORS.with_label_values(&[Stage::Reconcile.as_str(), kind.as_str()]);
        // A refusal of every write trips it too (its kind: denied).
        if kind.is_systemic() || kind == ErrorKind::Denied {
            BREAKER_TRIPS.with_label_values(&[kind.as_str()]);
        }
    }
    LazyLock::force(&BYTES_SENT);
    LazyLock::force(&BANDWIDTH_LIMITED);
    LazyLock::force(&OBJECTS_IN_FLIGHT);
    LazyLock::force(&BYTES_IN_FLIGHT);
    LazyLock::force(&MEMORY_RESERVED);
    LazyLock::force(&QUEUE_MESSAGES);
    LazyLock::force(&S3_REQUESTS);
    LazyLock::force(&ERRORS);
    LazyLock::force(&READY);
    LazyLock::force(&BREAKER_TRIPS);
}

/// Starts a route's series at zero (its `route` label: a configured name, so the
/// label's values are bounded by the configuration).
pub fn start_route(route: &str) {
    for outcome in Outcome::ALL {
        OBJECTS.with_label_values(&[outcome.as_str(), route]);
    }
    BYTES_COPIED.with_label_values(&[route]);
    REPLICATION_LATENCY.with_label_values(&[route]);
}

/// Counts an error of `kind` at `stage`.
pub fn error(stage: Stage, kind: ErrorKind) {
    ERRORS
        .with_label_values(&[stage.as_str(), kind.as_str()])
        .inc();
}

/// Adds to a gauge for as long as it is held: an in-flight count that cannot be
/// left raised by an early return or a cancelled task.
#[must_use = "the gauge goes back down when this is dropped"]
#[derive(Debug)]
pub struct GaugeHold {
    gauge: &'static IntGauge,
    amount: i64,
}

/// Adds `amount` to `gauge` until the returned guard is dropped.
pub fn hold(gauge: &'static LazyLock<IntGauge>, amount: i64) -> GaugeHold {
    let gauge: &'static IntGauge = gauge;
    gauge.add(amount);
    GaugeHold { gauge, amount }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.gauge.sub(self.amount);
    }
}

/// Every metric family, as it is now.
pub fn gather() -> Vec<prometheus::proto::MetricFamily> {
    REGISTRY.gather()
}

/// The registry in Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut out)
        .expect("text encoding into a Vec cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}
