//! The production event path in the source partition, and the daemon on top of it:
//! the source bucket sends its events to EventBridge, a rule forwards S3's Object
//! Created and Object Deleted events to an SQS queue, and the queue redrives to a
//! dead-letter queue after five receives. The fleet's ranges travel on a range
//! queue of their own, redriving to the same dead-letter queue.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{EventBridgeConfiguration, NotificationConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

use super::emulator::free_port;
use super::s3::sdk_config;
use super::{Partitions, SOURCE_BUCKET, SOURCE_KEY_ID, SOURCE_REGION, SOURCE_SECRET_KEY};

pub const MAX_RECEIVE_COUNT: u32 = 5;

/// The queues and the rule feeding them.
pub struct Pipeline {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dead_letter_url: String,
    pub range_url: String,
}

impl Pipeline {
    /// Wires the source bucket → EventBridge → SQS (+ DLQ), and writes the
    /// configuration `xpsync run` needs (the queue; each [`Daemon`] gets a port).
    pub async fn wire(p: &Partitions) -> Self {
        let conf = sdk_config(
            &p.source.endpoint,
            SOURCE_REGION,
            SOURCE_KEY_ID,
            SOURCE_SECRET_KEY,
        );
        let sqs = aws_sdk_sqs::Client::new(&conf);
        let (queue_url, dead_letter_url, range_url) = create_queues(&sqs).await;
        route_events(p, &conf, queue_arn(&sqs, &queue_url).await).await;

        let pipeline = Self {
            sqs,
            queue_url,
            dead_letter_url,
            range_url,
        };
        p.write_config("xpsync.toml", &pipeline.config_extra(p));
        pipeline
    }

    fn config_extra(&self, p: &Partitions) -> String {
        format!(
            "\n[queue]\nurl = \"{}\"\nrange_url = \"{}\"\nendpoint_url = \"{}\"\nwait_time = \"1s\"\nvisibility_timeout = \"30s\"\n",
            self.queue_url, self.range_url, p.source.endpoint,
        )
    }

    /// Sends a raw message body to the main queue.
    pub async fn send(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send a message");
    }

    /// Empties the main queue.
    pub async fn purge(&self) {
        self.sqs
            .purge_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .expect("purge the queue");
    }

    /// Approximate messages of a queue: visible, in flight and delayed.
    pub async fn depth(&self, url: &str) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("queue attributes");
        let attributes = out.attributes().cloned().unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .filter_map(|name| attributes.get(name)?.parse::<u64>().ok())
        .sum()
    }

    /// Whether the main queue and the range queue hold nothing.
    pub async fn drained(&self) -> bool {
        self.depth(&self.queue_url).await == 0 && self.depth(&self.range_url).await == 0
    }

    /// Receives (without deleting or hiding) up to 10 messages of a queue, with
    /// their attributes.
    pub async fn visible(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive from a queue");
        out.messages().to_vec()
    }

    /// What the dead-letter queue holds (see [`Pipeline::visible`]).
    pub async fn dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        self.visible(&self.dead_letter_url).await
    }
}

/// The queue and the range queue, and their dead-letter queue, which they redrive
/// to after [`MAX_RECEIVE_COUNT`] receives: their URLs (main, dead-letter, range).
async fn create_queues(sqs: &aws_sdk_sqs::Client) -> (String, String, String) {
    let dead_letter_url = create_queue(sqs, "xpsync-events-dlq", None).await;
    let dead_letter_arn = queue_arn(sqs, &dead_letter_url).await;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": MAX_RECEIVE_COUNT.to_string(),
    })
    .to_string();
    let queue_url = create_queue(sqs, "xpsync-events", Some(&redrive)).await;
    let range_url = create_queue(sqs, "xpsync-ranges", Some(&redrive)).await;
    (queue_url, dead_letter_url, range_url)
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, redrive: Option<&str>) -> String {
    let mut create = sqs.create_queue().queue_name(name);
    if let Some(policy) = redrive {
        create = create.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    create
        .send()
        .await
        .expect("create a queue")
        .queue_url()
        .expect("a queue url")
        .to_owned()
}

/// The source bucket's events to EventBridge, and a rule sending its objects'
/// events to the queue.
impl Pipeline {
    /// Sends the events of another source bucket to the queue too, by a rule of its own.
    pub async fn wire_bucket(&self, p: &Partitions, bucket: &str) {
        let conf = sdk_config(
            &p.source.endpoint,
            SOURCE_REGION,
            SOURCE_KEY_ID,
            SOURCE_SECRET_KEY,
        );
        let arn = queue_arn(&self.sqs, &self.queue_url).await;
        route_bucket_events(p, &conf, bucket, arn).await;
    }
}

async fn route_events(p: &Partitions, conf: &aws_config::SdkConfig, queue_arn: String) {
    route_bucket_events(p, conf, SOURCE_BUCKET, queue_arn).await;
}

async fn route_bucket_events(
    p: &Partitions,
    conf: &aws_config::SdkConfig,
    bucket: &str,
    queue_arn: String,
) {
    let rule = format!("xpsync-{bucket}-objects");
    p.source_s3
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .event_bridge_configuration(EventBridgeConfiguration::builder().build())
                .build(),
        )
        .send()
        .await
        .expect("send the bucket's events to EventBridge");
    let events = aws_sdk_eventbridge::Client::new(conf);
    let pattern = serde_json::json!({
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": [bucket]}},
    });
    events
        .put_rule()
        .name(&rule)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("create the rule");
    events
        .put_targets()
        .rule(&rule)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("xpsync-queue")
                .arn(queue_arn)
                .build()
                .expect("a target"),
        )
        .send()
        .await
        .expect("target the queue");
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("a queue ARN")
}

/// A running `xpsync run`.
pub struct Daemon {
    child: tokio::process::Child,
    pub base_url: String,
    pub log: PathBuf,
    /// What it printed on stdout (`run` prints only CloudWatch EMF lines there).
    pub out: PathBuf,
}

impl Daemon {
    /// Starts the daemon with the test's configuration and `env`, and waits until
    /// it answers `/healthz`.
    pub async fn start(p: &Partitions, name: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(p, name, env, true).await
    }

    /// As [`Daemon::start`]; `wait_ready` false returns as soon as HTTP answers.
    pub async fn start_with(
        p: &Partitions,
        name: &str,
        env: &[(&str, &str)],
        wait_ready: bool,
    ) -> Self {
        // Each daemon listens on a port of its own.
        let listen = format!("127.0.0.1:{}", free_port());
        let log = p.dir.path().join(format!("{name}.log"));
        let out = p.dir.path().join(format!("{name}.out"));
        let mut command = p.xpsync(&["run"]);
        command
            .env("XPSYNC_SERVER__LISTEN", &listen)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&out).expect("an output file"))
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let child = command.spawn().expect("start xpsync run");
        let mut daemon = Self {
            child,
            base_url: format!("http://{listen}"),
            log,
            out,
        };
        let path = if wait_ready { "/readyz" } else { "/healthz" };
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.get(path).0 != 200 {
            let exited = daemon.child.try_wait().expect("the daemon's status");
            assert!(
                exited.is_none(),
                "the daemon exited ({exited:?}):\n{}",
                daemon.logs()
            );
            assert!(
                Instant::now() < deadline,
                "the daemon did not start:\n{}",
                daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    /// GETs a path: (status, body); status 0 if nothing answered.
    pub fn get(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        match agent.get(format!("{}{path}", self.base_url)).call() {
            Ok(mut response) => (
                response.status().as_u16(),
                response.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// The sum of the samples of `/metrics` that `sample` names, e.g.
    /// `xpsync_objects_total{result="copied"}`: every series of that name holding
    /// those labels, whatever its others (`route`).
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        let (name, wanted) = series(sample);
        let values: Vec<f64> = body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series_text, value) = line.rsplit_once(' ')?;
                let (found, labels) = series(series_text);
                let holds = found == name && wanted.iter().all(|l| labels.contains(l));
                holds.then(|| value.parse().ok()).flatten()
            })
            .collect();
        assert!(
            !values.is_empty(),
            "no sample {sample} in /metrics:\n{body}"
        );
        values.iter().sum()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What it printed on stdout.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the daemon is running")
    }

    /// Kills the process outright (SIGKILL): no shutdown of any kind.
    pub fn kill(&self) {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Sends SIGTERM, unless the daemon has already exited.
    pub fn terminate(&mut self) {
        if self
            .child
            .try_wait()
            .expect("the daemon's status")
            .is_some()
        {
            return;
        }
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the daemon did not exit within {timeout:?}:\n{}",
                    self.logs()
                )
            })
            .expect("wait for the daemon")
    }
}

/// Polls `condition` every 100 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A message attribute's text (the DLQ's `xpsync-reason`, say); empty if absent.
pub fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> String {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned()
}

/// A series' name and its `label="value"` pairs.
fn series(text: &str) -> (&str, Vec<&str>) {
    match text.split_once('{') {
        Some((name, labels)) => {
            let labels = labels.trim_end_matches('}');
            let pairs = labels.split("\",").map(|l| l.trim_end_matches('"'));
            (name, pairs.filter(|l| !l.is_empty()).collect())
        }
        None => (text, Vec::new()),
    }
}
