//! The metrics as CloudWatch's embedded metric format (EMF): JSON lines on stdout that
//! CloudWatch Logs (awslogs) turns into metrics, for deployments without a Prometheus
//! of their own (the China regions have no managed one).
//!
//! Every `cloudwatch.interval` the registry is read and printed, one line per set of
//! label values: the metric names are the Prometheus ones; counters are published as
//! their increase since the previous line (so a Sum over a period is the fleet's
//! increase), gauges as their value, histograms as `<name>_sum` and `<name>_count`
//! increases. Each line's dimensions are `Stack` (`cloudwatch.stack`) and the metric's
//! own labels, all of bounded cardinality; no task is named, so the fleet's values
//! add up. Only `xpsync_*` families are published. A last line is printed when the
//! daemon stops, so the final interval is not lost.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use prometheus::proto::{MetricFamily, MetricType};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// The labels of one line: name → value, in order.
type Labels = BTreeMap<String, String>;

/// One sample to publish: its name, CloudWatch unit and value.
struct Sample {
    name: String,
    unit: &'static str,
    value: f64,
}

/// Turns registry snapshots into EMF lines, remembering counters between them.
#[derive(Debug)]
pub struct Emf {
    namespace: String,
    stack: String,
    /// Each counter's value (name and labels) at the previous snapshot.
    previous: HashMap<(String, Labels), f64>,
}

impl Emf {
    pub fn new(namespace: &str, stack: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            stack: stack.to_owned(),
            previous: HashMap::new(),
        }
    }

    /// The EMF lines for `families` as they are now, stamped `timestamp_ms`.
    pub fn lines(&mut self, families: &[MetricFamily], timestamp_ms: u64) -> Vec<Value> {
        let mut by_labels: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        for family in families.iter().filter(|f| f.name().starts_with("xpsync_")) {
            for metric in family.get_metric() {
                let labels: Labels = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    .collect();
                let samples = self.samples(family, metric, &labels);
                by_labels.entry(labels).or_default().extend(samples);
            }
        }
        by_labels
            .into_iter()
            .map(|(labels, samples)| self.line(&labels, &samples, timestamp_ms))
            .collect()
    }

    fn samples(
        &mut self,
        family: &MetricFamily,
        metric: &prometheus::proto::Metric,
        labels: &Labels,
    ) -> Vec<Sample> {
        let name = family.name();
        let unit = unit_of(name);
        match family.get_field_type() {
            MetricType::COUNTER => {
                let total = metric.get_counter().value();
                vec![self.increase(name, unit, labels, total)]
            }
            MetricType::GAUGE => vec![Sample {
                name: name.to_owned(),
                unit,
                value: metric.get_gauge().value(),
            }],
            MetricType::HISTOGRAM => {
                let h = metric.get_histogram();
                vec![
                    self.increase(&format!("{name}_sum"), unit, labels, h.get_sample_sum()),
                    self.increase(
                        &format!("{name}_count"),
                        "Count",
                        labels,
                        h.get_sample_count() as f64,
                    ),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// A counter's increase since the previous snapshot (all of it at the first).
    fn increase(&mut self, name: &str, unit: &'static str, labels: &Labels, total: f64) -> Sample {
        let before = self
            .previous
            .insert((name.to_owned(), labels.clone()), total)
            .unwrap_or(0.0);
        Sample {
            name: name.to_owned(),
            unit,
            value: (total - before).max(0.0),
        }
    }

    fn line(&self, labels: &Labels, samples: &[Sample], timestamp_ms: u64) -> Value {
        let mut dimensions = vec![Value::from("Stack")];
        dimensions.extend(labels.keys().map(|k| Value::from(k.as_str())));
        // A route's metrics are also published without the route, as they were
        // before routes: the whole fleet's, which alarms read.
        let mut sets = vec![Value::from(dimensions.clone())];
        if labels.contains_key("route") {
            dimensions.retain(|d| d != "route");
            sets.push(Value::from(dimensions));
        }
        let definitions: Vec<Value> = samples
            .iter()
            .map(|s| json!({"Name": s.name, "Unit": s.unit}))
            .collect();
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": sets,
                    "Metrics": definitions,
                }],
            }),
        );
        line.insert("Stack".into(), Value::from(self.stack.as_str()));
        for (name, value) in labels {
            line.insert(name.clone(), Value::from(value.as_str()));
        }
        for sample in samples {
            line.insert(sample.name.clone(), json!(sample.value));
        }
        Value::Object(line)
    }
}

/// CloudWatch's unit for a metric, from its name.
fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_seconds") || name.contains("_seconds_") {
        "Seconds"
    } else if name.contains("_bytes") {
        "Bytes"
    } else {
        "Count"
    }
}

/// Prints the registry as EMF every `interval` until `stop`, and once more then.
pub async fn publish(
    namespace: String,
    stack: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut emf = Emf::new(&namespace, &stack);
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = stop.cancelled() => true,
        };
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let lines = emf.lines(&super::gather(), millis);
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            if let Err(e) = writeln!(stdout, "{line}") {
                tracing::warn!(error = %e, "could not print the embedded metrics");
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

    #[test]
    fn counters_are_published_as_increases_gauges_as_values() {
        let registry = Registry::new();
        let objects =
            IntCounterVec::new(Opts::new("xpsync_objects_total", "o"), &["result"]).unwrap();
        let ready = IntGauge::new("xpsync_ready", "r").unwrap();
        let latency =
            Histogram::with_opts(HistogramOpts::new("xpsync_latency_seconds", "l")).unwrap();
        let other = IntGauge::new("process_threads", "p").unwrap();
        registry.register(Box::new(objects.clone())).unwrap();
        registry.register(Box::new(ready.clone())).unwrap();
        registry.register(Box::new(latency.clone())).unwrap();
        registry.register(Box::new(other.clone())).unwrap();
        let mut emf = Emf::new("xpsync", "prod");

        objects.with_label_values(&["copied"]).inc_by(3);
        ready.set(1);
        latency.observe(2.0);
        let first = emf.lines(&registry.gather(), 1);
        objects.with_label_values(&["copied"]).inc_by(2);
        let second = emf.lines(&registry.gather(), 2);

        let copied = |lines: &[Value]| {
            lines
                .iter()
                .find(|l| l["result"] == "copied")
                .map(|l| l["xpsync_objects_total"].clone())
        };
        assert_eq!(copied(&first), Some(json!(3.0)));
        assert_eq!(
            copied(&second),
            Some(json!(2.0)),
            "the increase, not the total"
        );
        let plain = second.iter().find(|l| l.get("result").is_none()).unwrap();
        assert_eq!(plain["xpsync_ready"], json!(1.0));
        assert_eq!(plain["xpsync_latency_seconds_count"], json!(0.0));
        assert_eq!(plain["Stack"], "prod");
        assert!(
            plain.get("process_threads").is_none(),
            "only xpsync_ metrics"
        );
        let definition = &first[0]["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(definition["Namespace"], "xpsync");
        assert_eq!(definition["Dimensions"], json!([["Stack"]]));
        let labelled = first.iter().find(|l| l["result"] == "copied").unwrap();
        assert_eq!(
            labelled["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stack", "result"]])
        );
    }

    #[test]
    fn a_route_s_metrics_are_also_the_fleet_s() {
        let registry = Registry::new();
        let objects =
            IntCounterVec::new(Opts::new("xpsync_objects_total", "o"), &["result", "route"])
                .unwrap();
        registry.register(Box::new(objects.clone())).unwrap();
        objects.with_label_values(&["copied", "logs"]).inc();
        let lines = Emf::new("xpsync", "prod").lines(&registry.gather(), 1);
        assert_eq!(lines[0]["route"], "logs");
        assert_eq!(
            lines[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Stack", "result", "route"], ["Stack", "result"]])
        );
    }
}
