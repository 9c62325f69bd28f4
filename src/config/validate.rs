//! [`Config::validate`]: what serde cannot check (ranges, URLs, combinations),
//! every problem reported at once, one line each, naming the setting.

use std::time::Duration;

use super::*;

/// The least `transfer.max_bandwidth`: below it a cap starves every copy.
const MIN_BANDWIDTH: u64 = 64 * 1024;

impl Config {
    /// Checks everything serde could not, reporting every problem found.
    pub fn validate(&self, needs: Needs) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match self.routes.is_empty() {
            true => self.check(needs, &mut problems),
            false => self.check_routes(needs, &mut problems),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every check of one route's configuration.
    pub(super) fn check(&self, needs: Needs, problems: &mut Vec<String>) {
        if needs != Needs::Queue {
            check_side(problems, self.source.view());
            check_side(problems, self.target.view());
        }
        if needs != Needs::Buckets {
            if self.queue.url.is_empty() {
                problems.push("queue.url is required".into());
            } else {
                check_url(problems, "queue.url", &self.queue.url);
            }
        }
        self.check_queue(problems);
        self.check_transfer(problems);
        self.check_target(problems);
        self.check_the_rest(problems);
    }

    /// `[queue]`: URLs, the long poll and the visibility timeout.
    fn check_queue(&self, problems: &mut Vec<String>) {
        let q = &self.queue;
        for (key, url) in [
            ("queue.dead_letter_url", &q.dead_letter_url),
            ("queue.range_url", &q.range_url),
        ] {
            if !url.is_empty() {
                check_url(problems, key, url);
            }
        }
        if !q.range_url.is_empty() && [&q.url, &q.dead_letter_url].contains(&&q.range_url) {
            problems.push(format!(
                "queue.range_url is {:?}, but must be a queue of its own: not the main queue nor the dead-letter queue",
                q.range_url
            ));
        }
        if let Some(url) = &self.queue.endpoint_url {
            check_url(problems, "queue.endpoint_url", url);
        }
        if self.queue.wait_time > Duration::from_secs(20) {
            problems.push(format!(
                "queue.wait_time is {}, but SQS long-polls for at most 20s",
                humantime::format_duration(self.queue.wait_time)
            ));
        }
        if self.queue.visibility_timeout < Duration::from_secs(10)
            || self.queue.visibility_timeout > MAX_VISIBILITY
        {
            problems.push(format!(
                "queue.visibility_timeout is {}, but must be between 10s and 12h",
                humantime::format_duration(self.queue.visibility_timeout)
            ));
        }
    }

    /// `[transfer]`: S3's part sizes, the budget, the split.
    fn check_transfer(&self, problems: &mut Vec<String>) {
        let t = &self.transfer;
        if t.max_objects == 0 {
            problems.push("transfer.max_objects must be at least 1".into());
        }
        if t.max_parts == 0 {
            problems.push("transfer.max_parts must be at least 1".into());
        }
        if t.part_size.as_u64() < MIN_PART_SIZE {
            problems.push(format!(
                "transfer.part_size is {}, but S3 parts must be at least 5MiB",
                t.part_size.display().iec()
            ));
        }
        if t.part_size.as_u64() > MAX_PART_SIZE {
            problems.push(format!(
                "transfer.part_size is {}, but S3 parts must be at most 5GiB",
                t.part_size.display().iec()
            ));
        }
        if t.multipart_threshold.as_u64() > MAX_PART_SIZE {
            problems.push(format!(
                "transfer.multipart_threshold is {}, but a single PUT holds at most 5GiB",
                t.multipart_threshold.display().iec()
            ));
        }
        if t.max_bandwidth.is_some_and(|b| b.as_u64() < MIN_BANDWIDTH) {
            problems.push(format!(
                "transfer.max_bandwidth is {}/s, but a cap must be at least 64KiB/s (unset it for none)",
                t.max_bandwidth.unwrap_or_default().display().iec()
            ));
        }
        if t.memory_limit < t.part_size {
            problems.push(format!(
                "transfer.memory_limit ({}) is smaller than one part (transfer.part_size = {})",
                t.memory_limit.display().iec(),
                t.part_size.display().iec()
            ));
        }

        if t.split_check_delay < Duration::from_secs(1)
            || t.split_check_delay > Duration::from_secs(900)
        {
            problems.push(format!(
                "transfer.split_check_delay is {}, but SQS delays a message by 1s to 15m",
                humantime::format_duration(t.split_check_delay)
            ));
        }
        if t.split_threshold.as_u64() != 0 && t.split_threshold < t.multipart_threshold {
            problems.push(format!(
                "transfer.split_threshold ({}) is below transfer.multipart_threshold ({}): split objects are copied in parts",
                t.split_threshold.display().iec(),
                t.multipart_threshold.display().iec()
            ));
        }
    }

    /// `[target]` beyond how to reach it: encryption and storage class.
    fn check_target(&self, problems: &mut Vec<String>) {
        if !self.target.sse_kms_key_id.is_empty() && self.target.sse != Sse::Kms {
            problems.push("target.sse_kms_key_id is set, but target.sse is not \"aws:kms\"".into());
        }
        check_storage_class(problems, &self.target.storage_class);
    }

    /// `[replicate]`, `[server]`, `[timeouts]`, `[shutdown]` and `[log]`.
    fn check_the_rest(&self, problems: &mut Vec<String>) {
        for (name, prefixes) in [
            (
                "replicate.include_prefixes",
                &self.replicate.include_prefixes,
            ),
            (
                "replicate.exclude_prefixes",
                &self.replicate.exclude_prefixes,
            ),
        ] {
            if prefixes.iter().any(String::is_empty) {
                problems.push(format!(
                    "{name} holds an empty prefix, which would match every key"
                ));
            }
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen is {:?}, but must be an address like 0.0.0.0:9464",
                self.server.listen
            ));
        }
        for (name, value) in [
            ("timeouts.connect", self.timeouts.connect),
            ("timeouts.first_byte", self.timeouts.first_byte),
            ("timeouts.between_reads", self.timeouts.between_reads),
        ] {
            if value < Duration::from_secs(1) {
                problems.push(format!(
                    "{name} is {}, but must be at least 1s",
                    humantime::format_duration(value)
                ));
            }
        }
        if self.shutdown.grace_period > Duration::from_secs(115) {
            problems.push(format!(
                "shutdown.grace_period is {}, but ECS kills a task at most 120s after SIGTERM",
                humantime::format_duration(self.shutdown.grace_period)
            ));
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            problems.push(format!(
                "log.format is {:?}, but must be \"json\" or \"text\"",
                self.log.format
            ));
        }
        let days = self.replicate.restore_days;
        if !(1..=MAX_RESTORE_DAYS).contains(&days) {
            problems.push(format!(
                "replicate.restore_days is {days}, but must be between 1 and {}",
                MAX_RESTORE_DAYS
            ));
        }
        let cloudwatch = &self.cloudwatch;
        if cloudwatch.emf && cloudwatch.interval < Duration::from_secs(1) {
            problems.push(format!(
                "cloudwatch.interval is {}, but must be at least 1s",
                humantime::format_duration(cloudwatch.interval)
            ));
        }
        if cloudwatch.emf && cloudwatch.namespace.is_empty() {
            problems.push("cloudwatch.namespace is empty, but CloudWatch needs one".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level is {:?}, but must be a level such as \"info\" or a filter directive",
                self.log.level
            ));
        }
    }
}

fn check_side(problems: &mut Vec<String>, view: SideView<'_>) {
    let SideView {
        name: side,
        region,
        bucket,
        endpoint_url,
        credentials,
        ..
    } = view;
    if region.is_empty() {
        problems.push(format!("{side}.region is required"));
    }
    if bucket.is_empty() {
        problems.push(format!("{side}.bucket is required"));
    } else if bucket.len() < 3 || bucket.len() > 63 || bucket.contains('/') {
        problems.push(format!(
            "{side}.bucket is {bucket:?}, which is not a valid bucket name"
        ));
    }
    if let Some(url) = endpoint_url {
        check_url(problems, &format!("{side}.endpoint_url"), url);
    }
    let Some(c) = credentials else { return };
    let path = format!("{side}.credentials");
    match (&c.secret_id, &c.access_key_id, &c.secret_access_key) {
        (Some(_), None, None) => {
            if c.session_token.is_some() {
                problems.push(format!(
                    "{path}.session_token is only used with access_key_id"
                ));
            }
        }
        (None, Some(_), Some(_)) => {
            if c.secret_region.is_some() || c.secret_endpoint_url.is_some() {
                problems.push(format!(
                    "{path}: secret_region and secret_endpoint_url are only used with secret_id"
                ));
            }
        }
        (None, None, None) => problems.push(format!(
            "{path} needs either secret_id, or access_key_id and secret_access_key \
             (omit the table to use the default AWS chain)"
        )),
        (Some(_), _, _) => problems.push(format!(
            "{path} gives both secret_id and static keys: choose one"
        )),
        (None, Some(_), None) => problems.push(format!(
            "{path}.access_key_id is set without secret_access_key"
        )),
        (None, None, Some(_)) => problems.push(format!(
            "{path}.secret_access_key is set without access_key_id"
        )),
    }
    if let Some(url) = &c.secret_endpoint_url {
        check_url(problems, &format!("{path}.secret_endpoint_url"), url);
    }
    // Secrets Manager is paid per call and throttled: a minute at least. A secret
    // served by an endpoint of one's own (an emulator) may be re-read every second.
    let floor = match c.secret_endpoint_url {
        Some(_) => Duration::from_secs(1),
        None => Duration::from_secs(60),
    };
    if c.refresh_interval < floor {
        problems.push(format!(
            "{path}.refresh_interval is {}, but must be at least {}",
            humantime::format_duration(c.refresh_interval),
            humantime::format_duration(floor)
        ));
    }
}

/// Storage classes a general-purpose bucket takes and later self-copies (a
/// description updated in place) can still read.
const STORAGE_CLASSES: [&str; 6] = [
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
];

fn check_storage_class(problems: &mut Vec<String>, class: &str) {
    let why = match class {
        "" => return,
        c if STORAGE_CLASSES.contains(&c) => return,
        "GLACIER" | "DEEP_ARCHIVE" => "its objects cannot be read until restored, so a description could never be updated in place; use a lifecycle rule on the target bucket instead",
        "EXPRESS_ONEZONE" => "only directory buckets take it, and xpsync writes to a general-purpose bucket",
        "OUTPOSTS" | "SNOW" => "it is for S3 on Outposts or Snow devices, not a region's bucket",
        c if !c.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
            problems.push(format!(
                "target.storage_class is {class:?}, but storage classes are written like STANDARD_IA"
            ));
            return;
        }
        _ => "S3 knows no such class",
    };
    problems.push(format!(
        "target.storage_class is {class:?}, which cannot be used: {why} (one of {})",
        STORAGE_CLASSES.join(", ")
    ));
}

fn check_url(problems: &mut Vec<String>, name: &str, value: &str) {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(_) => problems.push(format!(
            "{name} is {value:?}, but must be an http:// or https:// URL"
        )),
        Err(e) => problems.push(format!("{name} is {value:?}, which is not a URL: {e}")),
    }
}
