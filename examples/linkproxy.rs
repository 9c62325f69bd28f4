//! The benchmark's link model: a TCP proxy in front of an S3 server that caps every
//! connection at a rate and adds a latency in each direction.
//!
//! `linkproxy UPSTREAM_URL MIB_PER_SECOND LATENCY_MS` prints its own URL on stdout,
//! then forwards until killed.

#[path = "../tests/common/proxy.rs"]
#[allow(dead_code)] // the tests' shorthand constructor
mod proxy;

use std::time::Duration;

use proxy::{Link, SlowProxy};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, upstream, rate, latency] = args.as_slice() else {
        eprintln!("usage: linkproxy UPSTREAM_URL MIB_PER_SECOND LATENCY_MS");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("MIB_PER_SECOND is a number");
    let latency: u64 = latency.parse().expect("LATENCY_MS is a whole number");
    let link = Link {
        bytes_per_second: Some((rate * 1024.0 * 1024.0) as u64),
        latency: Duration::from_millis(latency),
    };
    let proxy = SlowProxy::start_link(upstream, link, link).await;
    println!("{}", proxy.endpoint);
    std::future::pending::<()>().await;
}
