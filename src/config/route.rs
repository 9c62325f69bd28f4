//! Routes: many bucket pairs served by one fleet (`[[route]]`).
//!
//! A route names a source bucket (and a prefix of its keys) and the target bucket
//! its keys go to, with the target's key prefix, storage class, region and
//! credentials, and optionally a `[replicate]` of its own. Everything else (the
//! source's region, endpoint and credentials, the queue, the transfer limits) is
//! the fleet's, shared. [`Config::routes`] makes each route a whole [`Config`], so
//! that every reconcile, split and check runs as it does for a single pair. A
//! configuration without routes is one route, named `default`.
//!
//! A key is routed by its bucket, then by the longest matching prefix
//! ([`route_of`]). A key of a routed bucket under no route's prefix goes to one of
//! that bucket's routes, which filters it out (`filtered`); a bucket no route names
//! is never guessed at: [`route_of`] says why, and the message is poison.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{Config, CredentialsConfig, Needs, ReplicateConfig};

/// One `[[route]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name: its `route` label, and `--route NAME`.
    pub name: String,
    pub source: RouteSource,
    pub target: RouteTarget,
    /// What is replicated; omitted: the top-level `[replicate]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<ReplicateConfig>,
    /// Its share of `transfer.max_bandwidth`: a route gets the cap × its weight ÷
    /// every route's weights (a route without one weighs 1). Unset on every
    /// route: the routes share the cap first come, first served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A route's source: a bucket of the source partition, and which of its keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSource {
    pub bucket: String,
    /// Only keys under it take this route. Default: every key of the bucket.
    #[serde(default)]
    pub prefix: String,
}

/// A route's target; what it omits is `[target]`'s.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    pub bucket: String,
    #[serde(default)]
    pub key_prefix: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_class: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsConfig>,
}

/// Which route a [`Config`] is: its name, and the source keys it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteScope {
    pub name: String,
    /// Keys under it...
    pub prefix: String,
    /// ...but not under these: the longer prefixes of other routes of its bucket.
    pub others: Vec<String>,
    /// Its `transfer.max_bandwidth` is its share of the worker's, its own (routes
    /// with weights), not the cap every route shares.
    pub own_bandwidth: bool,
}

impl Default for RouteScope {
    fn default() -> Self {
        Self {
            name: "default".into(),
            prefix: String::new(),
            others: Vec::new(),
            own_bandwidth: false,
        }
    }
}

impl RouteScope {
    /// Whether `key` takes this route.
    pub fn takes(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) && !self.others.iter().any(|p| key.starts_with(p))
    }
}

/// The longest a route's name may be (it is a metric label).
const MAX_NAME: usize = 64;

impl Config {
    /// Each route as a whole configuration, in the order written; without
    /// `[[route]]`, this one, named `default`.
    pub fn routes(&self) -> Vec<Config> {
        if self.routes.is_empty() {
            return vec![self.clone()];
        }
        self.routes
            .iter()
            .map(|route| self.as_route(route))
            .collect()
    }

    fn as_route(&self, route: &RouteConfig) -> Config {
        let mut config = self.clone();
        config.routes = Vec::new();
        let prefix = &route.source.prefix;
        let others = self
            .routes
            .iter()
            .filter(|r| r.source.bucket == route.source.bucket)
            .map(|r| &r.source.prefix)
            .filter(|p| p.len() > prefix.len() && p.starts_with(prefix.as_str()))
            .cloned()
            .collect();
        let weighted = self.routes.iter().any(|r| r.weight.is_some());
        config.scope = RouteScope {
            name: route.name.clone(),
            prefix: prefix.clone(),
            others,
            own_bandwidth: weighted,
        };
        if weighted {
            let weight = |r: &RouteConfig| u64::from(r.weight.unwrap_or(1));
            let all: u64 = self.routes.iter().map(weight).sum();
            let cap = &mut config.transfer.max_bandwidth;
            *cap = cap.map(|b| ByteSize::b(b.as_u64() * weight(route) / all.max(1)));
        }
        config.source.bucket = route.source.bucket.clone();
        let (t, r) = (&mut config.target, &route.target);
        t.bucket = r.bucket.clone();
        t.key_prefix = r.key_prefix.clone();
        if !r.storage_class.is_empty() {
            t.storage_class = r.storage_class.clone();
        }
        if let Some(region) = &r.region {
            t.region = region.clone();
        }
        if let Some(url) = &r.endpoint_url {
            t.endpoint_url = Some(url.clone());
        }
        if let Some(credentials) = &r.credentials {
            t.credentials = Some(credentials.clone());
        }
        if let Some(replicate) = &route.replicate {
            config.replicate = replicate.clone();
        }
        config
    }

    /// The routes `--route` selects: the one named, or every route.
    pub fn routes_named(&self, name: Option<&str>) -> Result<Vec<Config>, String> {
        let routes = self.routes();
        let Some(name) = name else {
            return Ok(routes);
        };
        let names: Vec<_> = routes.iter().map(|r| r.scope.name.clone()).collect();
        match routes.into_iter().find(|r| r.scope.name == name) {
            Some(route) => Ok(vec![route]),
            None => Err(format!(
                "no route is named {name:?}; the routes are: {}",
                names.join(", ")
            )),
        }
    }

    /// The source prefix a listing of this route under `prefix` takes (the
    /// narrower of the two); None if they do not meet.
    pub fn listing_prefix(&self, prefix: &str) -> Option<String> {
        let own = &self.scope.prefix;
        if prefix.starts_with(own.as_str()) {
            Some(prefix.to_owned())
        } else if own.starts_with(prefix) {
            Some(own.clone())
        } else {
            None
        }
    }

    /// The one route a command on keys acts on: `--route NAME`, or the only route.
    pub fn one_route(&self, name: Option<&str>) -> Result<Config, String> {
        let mut routes = self.routes_named(name)?;
        match routes.len() {
            1 => Ok(routes.remove(0)),
            _ => Err(format!(
                "{} routes are configured: say which with --route NAME",
                routes.len()
            )),
        }
    }

    /// Checks `[[route]]`, and every route as a whole configuration. Problems of
    /// one route's own settings name it; the fleet's are told once.
    pub(super) fn check_routes(&self, needs: Needs, problems: &mut Vec<String>) {
        if !self.source.bucket.is_empty() || !self.target.bucket.is_empty() {
            problems.push(
                "source.bucket or target.bucket is set, but with [[route]] each route names its buckets: remove them".into(),
            );
        }
        for (i, route) in self.routes.iter().enumerate() {
            let name = &route.name;
            let valid = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
            if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(valid) {
                problems.push(format!(
                    "route {name:?}: a route's name must be 1 to {MAX_NAME} letters, digits, '_', '.' or '-'"
                ));
            }
            for other in &self.routes[..i] {
                check_pair(problems, other, route);
            }
            if route.weight == Some(0) || route.weight.is_some_and(|w| w > 1000) {
                problems.push(format!("route {name:?}: weight must be 1 to 1000"));
            }
        }
        if self.routes.iter().any(|r| r.weight.is_some()) && self.transfer.max_bandwidth.is_none() {
            problems.push(
                "a route has a weight, its share of transfer.max_bandwidth, but transfer.max_bandwidth is unset".into(),
            );
        }
        for route in self.routes() {
            let mut own = Vec::new();
            route.check(needs, &mut own);
            for problem in own {
                // A weighted route's cap is its share: its problem is the route's.
                let own_cap =
                    route.scope.own_bandwidth && problem.starts_with("transfer.max_bandwidth");
                let of_route = own_cap
                    || ["source.", "target.", "replicate."]
                        .iter()
                        .any(|table| problem.starts_with(table));
                if of_route {
                    problems.push(format!("route {:?}: {problem}", route.scope.name));
                } else if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
    }
}

/// Two routes must differ in name, take no key both, and write no target key both.
fn check_pair(problems: &mut Vec<String>, a: &RouteConfig, b: &RouteConfig) {
    let names = format!("routes {:?} and {:?}", a.name, b.name);
    if a.name == b.name {
        problems.push(format!("{names}: two routes have the same name"));
    }
    if a.source.bucket == b.source.bucket && a.source.prefix == b.source.prefix {
        problems.push(format!(
            "{names} both take the keys of bucket {:?} under {:?}: a key must have one route (give them different prefixes)",
            a.source.bucket, a.source.prefix
        ));
    }
    // The target keys a route writes all begin with its key prefix and its prefix.
    let written = |r: &RouteConfig| format!("{}{}", r.target.key_prefix, r.source.prefix);
    let (wa, wb) = (written(a), written(b));
    if a.target.bucket == b.target.bucket && (wa.starts_with(&wb) || wb.starts_with(&wa)) {
        problems.push(format!(
            "{names} could both write the same keys of target bucket {:?} (under {:?} and {:?}): one would overwrite or delete the other's copies (give them different target.key_prefix)",
            a.target.bucket, wa, wb
        ));
    }
}

/// The route (an index of `routes`, from [`Config::routes`]) of a key of `bucket`:
/// the longest prefix of that bucket's routes that the key begins with, else the
/// bucket's first route (which filters the key out). Why not, when no route reads
/// `bucket`.
pub fn route_of(routes: &[Config], bucket: &str, key: &str) -> Result<usize, String> {
    let of_bucket = || {
        routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source.bucket == bucket)
    };
    let longest = of_bucket()
        .filter(|(_, r)| key.starts_with(&r.scope.prefix))
        .max_by_key(|(_, r)| r.scope.prefix.len());
    match longest.or_else(|| of_bucket().next()) {
        Some((i, _)) => Ok(i),
        None => {
            let buckets: Vec<_> = routes.iter().map(|r| r.source.bucket.as_str()).collect();
            Err(format!(
                "bucket {bucket:?} is no route's source (the routes read {})",
                buckets.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
        [source]
        region = "cn-north-1"
        [target]
        region = "us-west-2"
        [[route]]
        name = "logs"
        source = { bucket = "cn-logs", prefix = "app/" }
        target = { bucket = "global-logs", key_prefix = "cn/" }
        [[route]]
        name = "logs-audit"
        source = { bucket = "cn-logs", prefix = "app/audit/" }
        target = { bucket = "global-audit", storage_class = "STANDARD_IA", region = "eu-west-1" }
        [[route]]
        name = "media"
        source = { bucket = "cn-media" }
        target = { bucket = "global-media" }
        replicate = { deletes = true }
    "#;

    fn two() -> Config {
        toml::from_str(TWO).expect("parses")
    }

    #[test]
    fn each_route_is_a_whole_configuration_of_its_own() {
        let config = two();
        config.validate(Needs::Buckets).expect("valid");
        let routes = config.routes();
        let names: Vec<_> = routes.iter().map(|r| r.scope.name.as_str()).collect();
        assert_eq!(names, ["logs", "logs-audit", "media"]);
        let audit = &routes[1];
        assert_eq!(audit.source.bucket, "cn-logs");
        assert_eq!(audit.source.region, "cn-north-1", "the fleet's source");
        assert_eq!(audit.target.bucket, "global-audit");
        assert_eq!(audit.target.region, "eu-west-1");
        assert_eq!(audit.target.storage_class, "STANDARD_IA");
        assert_eq!(routes[0].target.region, "us-west-2", "[target]'s region");
        assert_eq!(routes[0].target.key_prefix, "cn/");
        assert!(routes[2].replicate.deletes && !routes[0].replicate.deletes);
        assert!(routes.iter().all(|r| r.routes.is_empty()));
    }

    #[test]
    fn a_key_takes_the_longest_prefix_of_its_bucket() {
        let routes = two().routes();
        assert_eq!(route_of(&routes, "cn-logs", "app/a"), Ok(0));
        assert_eq!(route_of(&routes, "cn-logs", "app/audit/a"), Ok(1));
        assert_eq!(route_of(&routes, "cn-media", "x"), Ok(2));
        // Under no prefix: the bucket's first route, which does not replicate it.
        assert_eq!(route_of(&routes, "cn-logs", "other/a"), Ok(0));
        assert!(!routes[0].is_replicated("other/a"));
        assert!(routes[0].is_replicated("app/a"));
        assert!(
            !routes[0].is_replicated("app/audit/a"),
            "the longer route's"
        );
        assert!(routes[1].is_replicated("app/audit/a"));
        let why = route_of(&routes, "cn-other", "k").unwrap_err();
        assert!(why.contains("\"cn-other\" is no route's source"), "{why}");
    }

    #[test]
    fn one_pair_is_the_route_named_default() {
        let config: Config = toml::from_str(
            "[source]\nregion = \"cn-north-1\"\nbucket = \"src\"\n[target]\nregion = \"us-west-2\"\nbucket = \"dst\"",
        )
        .unwrap();
        let routes = config.routes();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].scope.name, "default");
        assert_eq!(route_of(&routes, "src", "any"), Ok(0));
        assert!(route_of(&routes, "other", "any").is_err());
        assert_eq!(config.one_route(None).unwrap().source.bucket, "src");
    }

    #[test]
    fn weights_share_the_bandwidth_cap() {
        let mut config = two();
        config.transfer.max_bandwidth = Some(ByteSize::mib(5));
        let shared = config.routes();
        assert!(
            shared.iter().all(|r| !r.scope.own_bandwidth),
            "no weight: one cap"
        );
        assert_eq!(shared[2].transfer.max_bandwidth, Some(ByteSize::mib(5)));
        config.routes[0].weight = Some(3);
        let weighted = config.routes();
        let caps: Vec<_> = weighted.iter().map(|r| r.transfer.max_bandwidth).collect();
        // 3 + 1 + 1: the others weigh 1.
        assert_eq!(
            caps,
            [
                Some(ByteSize::mib(3)),
                Some(ByteSize::mib(1)),
                Some(ByteSize::mib(1))
            ]
        );
        assert!(weighted.iter().all(|r| r.scope.own_bandwidth));
        config.validate(Needs::Buckets).expect("valid");
        config.routes[1].weight = Some(0);
        config.transfer.max_bandwidth = None;
        let found = config.validate(Needs::Buckets).unwrap_err().to_string();
        assert!(
            found.contains("route \"logs-audit\": weight must be 1 to 1000"),
            "{found}"
        );
        assert!(found.contains("transfer.max_bandwidth is unset"), "{found}");
        // A share below the least cap names its route.
        config.routes[1].weight = Some(1000);
        config.transfer.max_bandwidth = Some(ByteSize::mib(1));
        let found = config.validate(Needs::Buckets).unwrap_err().to_string();
        assert!(
            found.contains("route \"logs\": transfer.max_bandwidth is"),
            "{found}"
        );
    }

    #[test]
    fn a_listing_takes_the_narrower_prefix() {
        let routes = two().routes();
        assert_eq!(routes[0].listing_prefix("").as_deref(), Some("app/"));
        assert_eq!(
            routes[0].listing_prefix("app/x/").as_deref(),
            Some("app/x/")
        );
        assert_eq!(routes[0].listing_prefix("a").as_deref(), Some("app/"));
        assert_eq!(routes[0].listing_prefix("other/"), None);
        assert_eq!(routes[2].listing_prefix("m/").as_deref(), Some("m/"));
    }

    #[test]
    fn routes_are_chosen_by_name() {
        let config = two();
        assert_eq!(config.routes_named(None).unwrap().len(), 3);
        assert_eq!(
            config.one_route(Some("media")).unwrap().target.bucket,
            "global-media"
        );
        let why = config.one_route(None).unwrap_err();
        assert!(why.contains("3 routes are configured"), "{why}");
        let why = config.routes_named(Some("nope")).unwrap_err();
        assert!(why.contains("logs, logs-audit, media"), "{why}");
    }

    fn problems(extra: &str) -> Vec<String> {
        let config: Config = toml::from_str(&format!("{TWO}\n{extra}")).expect("parses");
        match config.validate(Needs::Buckets) {
            Err(crate::config::ConfigError::Invalid(problems)) => problems,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let found = problems(
            r#"[[route]]
            name = "logs-again"
            source = { bucket = "cn-logs", prefix = "app/" }
            target = { bucket = "elsewhere" }"#,
        );
        assert!(
            found.iter().any(|p| p.contains("\"logs\" and \"logs-again\" both take the keys of bucket \"cn-logs\" under \"app/\"")),
            "{found:?}"
        );
        let found = problems(
            r#"[[route]]
            name = "media-too"
            source = { bucket = "cn-media-2" }
            target = { bucket = "global-media" }"#,
        );
        assert!(
            found.iter().any(|p| p.contains("\"media\" and \"media-too\" could both write the same keys of target bucket \"global-media\"")),
            "{found:?}"
        );
    }

    #[test]
    fn a_route_s_own_problems_name_it_and_the_fleet_s_are_told_once() {
        let found = problems(
            r#"[[route]]
            name = "bad name"
            source = { bucket = "x" }
            target = { bucket = "y", storage_class = "GLACIER" }
            [transfer]
            max_parts = 0"#,
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("route \"bad name\": a route's name")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("route \"bad name\": source.bucket is \"x\"")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("route \"bad name\": target.storage_class")),
            "{found:?}"
        );
        let once = found.iter().filter(|p| p.contains("max_parts")).count();
        assert_eq!(once, 1, "{found:?}");
        let mut config = two();
        config.source.bucket = "also".into();
        let found = format!("{:?}", config.validate(Needs::Buckets));
        assert!(found.contains("each route names its buckets"), "{found}");
    }
}
