//! `xpsync healthcheck`: GET the local `/healthz`, for container health checks in
//! images without curl.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;

/// Needs no valid configuration: only `server.listen`, to find the port.
pub(super) fn healthcheck(
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
