//! The daemon's routes: a reconciler and a part in the fleet's splits for each
//! bucket pair of the configuration ([`crate::config::RouteConfig`]), all sharing
//! the worker's object slots, part slots, memory budget and bandwidth.
//!
//! A message's bucket chose its route's reconciler ([`route_of`]); a bucket no
//! route reads never reaches here: [`crate::event::parse`] made it poison.

use std::sync::Arc;

use anyhow::Context;

use crate::aws;
use crate::config::{route_of, Config};
use crate::error::S3Error;
use crate::fleet::Worker;
use crate::queue::Queue;
use crate::reconcile::Reconciler;

/// One route of this worker.
#[derive(Debug)]
pub(super) struct Route {
    pub name: String,
    pub reconciler: Reconciler,
    pub fleet: Worker,
}

/// Every route of this worker, in the configuration's order.
#[derive(Debug)]
pub(super) struct Routes {
    list: Vec<Route>,
    /// Each route's configuration, for [`route_of`].
    configs: Vec<Config>,
    /// The routes' source buckets, each once.
    buckets: Vec<String>,
}

impl Routes {
    /// Connects every route's buckets; the first route's reconciler makes the
    /// limits every other route's shares.
    pub async fn connect(config: &Config, queue: &Queue) -> anyhow::Result<Self> {
        let configs = config.routes();
        let mut list: Vec<Route> = Vec::with_capacity(configs.len());
        for route in &configs {
            let name = route.scope.name.clone();
            let (source, target) = aws::connect(route)
                .await
                .with_context(|| format!("route {name:?}"))?;
            let (reconciler, fleet) = match list.first() {
                None => {
                    let reconciler =
                        Reconciler::new(source, target, Arc::new(route.clone())).splitting();
                    let fleet = Worker::new(reconciler.clone(), queue.clone(), route);
                    (reconciler, fleet)
                }
                Some(first) => {
                    let config = Arc::new(route.clone());
                    let reconciler = first.reconciler.for_route(source, target, config);
                    let fleet = first.fleet.for_route(reconciler.clone(), route);
                    (reconciler, fleet)
                }
            };
            crate::metrics::start_route(&name);
            list.push(Route {
                name,
                reconciler,
                fleet,
            });
        }
        let mut buckets: Vec<String> = Vec::new();
        for config in &configs {
            if !buckets.contains(&config.source.bucket) {
                buckets.push(config.source.bucket.clone());
            }
        }
        Ok(Self {
            list,
            configs,
            buckets,
        })
    }

    /// The source buckets messages may name.
    pub fn buckets(&self) -> Vec<&str> {
        self.buckets.iter().map(String::as_str).collect()
    }

    /// The route of a key of `bucket`; why none, if no route reads `bucket`
    /// (which [`crate::event::parse`] already refuses).
    pub fn of(&self, bucket: &str, key: &str) -> Result<&Route, String> {
        route_of(&self.configs, bucket, key).map(|index| &self.list[index])
    }

    /// What every route shares: the queues, and the ranges in hand.
    pub fn fleet(&self) -> &Worker {
        &self.list[0].fleet
    }

    /// What every route shares: the object slots and the transfer limits.
    pub fn reconciler(&self) -> &Reconciler {
        &self.list[0].reconciler
    }

    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|r| r.name.as_str()).collect()
    }

    /// The breaker's probe, of every route's buckets.
    pub async fn probe(&self) -> Result<(), S3Error> {
        for route in &self.list {
            route.reconciler.probe().await?;
        }
        Ok(())
    }
}
