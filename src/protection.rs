//! ECS task scale-in protection while a long copy runs.
//!
//! When Service Auto Scaling scales in, ECS stops tasks with SIGTERM and gives them
//! `stopTimeout`: a copy still running after `shutdown.grace_period` is cancelled
//! and its work so far is left for another task to resume. So while any copy has
//! run longer than the grace period (and would lose work if stopped), the task asks
//! the ECS agent to protect it from scale-in (`PUT $ECS_AGENT_URI/task-protection/v1/state`,
//! which the task role's `ecs:UpdateTaskProtection` allows), renews the protection
//! before it expires, and drops it when the last such copy ends.
//!
//! Outside ECS (`ECS_AGENT_URI` unset) this does nothing. A failed call to the
//! agent is logged and retried with the next change: protection is an optimisation,
//! never a condition for copying.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long each protection lasts unless renewed.
const EXPIRES_IN_MINUTES: u64 = 60;

/// Renewed this often while held.
const RENEW_EVERY: Duration = Duration::from_secs(30 * 60);

/// Scale-in protection, held by copies that outlast the grace period. Cheap to
/// clone; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Protection {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// `$ECS_AGENT_URI/task-protection/v1/state`.
    endpoint: String,
    holders: AtomicUsize,
    changed: Notify,
}

/// Holds the protection; released on drop.
#[must_use = "the protection is released when this is dropped"]
pub struct Protected {
    inner: Arc<Inner>,
}

impl Protection {
    /// Protection through the agent at `ECS_AGENT_URI`, if the task runs on ECS;
    /// the task that talks to the agent stops with `stop`.
    pub fn from_env(stop: CancellationToken) -> Self {
        match std::env::var("ECS_AGENT_URI") {
            Ok(uri) if !uri.is_empty() => Self::with_agent(&uri, stop),
            _ => Self::default(),
        }
    }

    /// Protection through the agent at `agent_uri`.
    pub fn with_agent(agent_uri: &str, stop: CancellationToken) -> Self {
        let inner = Arc::new(Inner {
            endpoint: format!(
                "{}/task-protection/v1/state",
                agent_uri.trim_end_matches('/')
            ),
            holders: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        tokio::spawn(keep_in_step(Arc::clone(&inner), stop));
        Self { inner: Some(inner) }
    }

    /// Holds the protection until the returned value is dropped.
    pub fn hold(&self) -> Option<Protected> {
        let inner = Arc::clone(self.inner.as_ref()?);
        if inner.holders.fetch_add(1, Ordering::SeqCst) == 0 {
            inner.changed.notify_one();
        }
        Some(Protected { inner })
    }
}

impl Drop for Protected {
    fn drop(&mut self) {
        if self.inner.holders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.changed.notify_one();
        }
    }
}

/// Tells the agent whenever the wanted state changes, and renews it while held.
async fn keep_in_step(inner: Arc<Inner>, stop: CancellationToken) {
    let mut protected = false;
    loop {
        let wanted = inner.holders.load(Ordering::SeqCst) > 0;
        if wanted != protected || wanted {
            match set(&inner.endpoint, wanted).await {
                Ok(()) => {
                    if wanted != protected {
                        tracing::info!(protected = wanted, "task scale-in protection changed");
                    }
                    protected = wanted;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not change the task's scale-in protection")
                }
            }
        }
        let renew = async {
            if protected {
                tokio::time::sleep(RENEW_EVERY).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            () = inner.changed.notified() => {}
            () = renew => {}
            () = stop.cancelled() => {
                if protected {
                    let _ = set(&inner.endpoint, false).await;
                }
                return;
            }
        }
    }
}

async fn set(endpoint: &str, enabled: bool) -> Result<(), String> {
    let body = if enabled {
        serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": EXPIRES_IN_MINUTES})
    } else {
        serde_json::json!({"ProtectionEnabled": false})
    };
    let endpoint = endpoint.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        match agent
            .put(&endpoint)
            .header("content-type", "application/json")
            .send(body.to_string())
        {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the ECS agent answered {}", response.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}
