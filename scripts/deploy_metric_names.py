#!/usr/bin/env python3
"""Checks that deploy/'s PromQL speaks of metrics xpsync really exports.

Every metric name in the Grafana dashboard, the Prometheus rules and the rules'
unit tests must be one src/metrics.rs registers (a histogram also as its _bucket,
_sum and _count series), a process metric of the prometheus crate's process
collector, `up`, or a series the rules record. Label names in selectors must be the
metric's own (or job, instance, stack, and le for buckets), and every label value matched
with = must appear as a string literal in src/, so that `queue="dlq"` for
`queue="dead_letter"` is caught, not silently never firing. The route label's values
are route names from the configuration ("default" for one pair), not literals of src/.

Labels the deployment relies on before src/metrics.rs registers them (PENDING_LABELS:
issue 24's route label) are accepted, and noted on stdout, until it does; from then on
they are checked like any other.

With --promtool, the dashboard's queries (Grafana variables filled in) are also
parsed by `promtool check rules`. With --scraped FILE (the text of a running
xpsync's /metrics), every metric used must also be present in that scrape.

Usage: scripts/deploy_metric_names.py [--promtool PATH] [--scraped FILE]   (from the repository root)
Needs PyYAML. Exit 1 with one line per problem.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
METRICS_RS = ROOT / "src" / "metrics.rs"
DASHBOARD = ROOT / "deploy" / "grafana" / "xpsync.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "rules_test.yml"

# What the prometheus crate's process collector exports on Linux.
PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
}
# Series Prometheus itself attaches to every scrape.
SCRAPE_METRICS = {"up"}
# Labels every scraped series carries: the scrape's, and the CloudFormation stack the
# worker belongs to (added by the metrics collector, deploy/prometheus/adot-collector.yaml).
TARGET_LABELS = {"job", "instance", "stack"}
# Labels whose values come from the configuration, not from src/: a route's name.
CONFIGURED_LABELS = {"route"}
# Issue 24 (routes): the labels these metrics gain, {metric: labels}; a histogram by
# its name. Accepted while src/metrics.rs does not register them yet (and noted).
PENDING_LABELS = {
    "xpsync_objects_total": {"route"},
    "xpsync_bytes_copied_total": {"route"},
    "xpsync_replication_latency_seconds": {"route"},
}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}
# Grafana's variables, as Prometheus would see them after interpolation.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$stack": "xpsync",
    "$instance": ".*",
    "$route": ".*",
}


def registered_metrics():
    """{name: set of label names} for every metric src/metrics.rs defines."""
    source = METRICS_RS.read_text()
    metrics = {}
    # One definition per `pub static`; the name is its first "xpsync_..." string, the
    # labels its `&[...]` list, if any.
    for chunk in source.split("pub static")[1:]:
        name = re.search(r'"(xpsync_[a-z0-9_]+)"', chunk)
        if not name:
            continue
        labels = re.search(r"&\[([^\]]*)\]", chunk)
        label_set = set(re.findall(r'"([a-z_]+)"', labels.group(1))) if labels else set()
        name = name.group(1)
        if re.search(r"Histogram(Vec)?::", chunk):
            metrics[name + "_bucket"] = label_set | {"le"}
            metrics[name + "_sum"] = label_set
            metrics[name + "_count"] = label_set
        else:
            metrics[name] = label_set
    if not metrics:
        sys.exit(f"{METRICS_RS}: no metric definitions found; has the file changed shape?")
    return metrics


def series_of(name, metrics):
    """The series names of a metric: a histogram's _bucket, _sum and _count."""
    if name in metrics:
        return [name]
    return [s for s in (name + "_bucket", name + "_sum", name + "_count") if s in metrics]


def pending_labels(metrics):
    """{series: labels} of PENDING_LABELS src/metrics.rs does not register yet."""
    pending = {}
    for name, labels in PENDING_LABELS.items():
        for series in series_of(name, metrics):
            missing = labels - metrics[series]
            if missing:
                pending[series] = missing
    return pending


def expected_metrics():
    """registered_metrics(), with the labels of PENDING_LABELS added: what deploy/ may
    rely on. The second value: {series: labels} added (not in src/metrics.rs yet)."""
    metrics = registered_metrics()
    pending = pending_labels(metrics)
    for series, labels in pending.items():
        metrics[series] = metrics[series] | labels
    return metrics, pending


def source_literals():
    """Every string literal in src/, for checking label values."""
    literals = set()
    for path in (ROOT / "src").rglob("*.rs"):
        literals.update(re.findall(r'"([^"\\]*)"', path.read_text()))
    return literals


def interpolate(expr):
    for var in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(var, GRAFANA_VARS[var])
    return expr


def selectors(expr):
    """(metric name or None, [(label, op, value)]) for every selector, and bare names."""
    found = []
    # Label values first, so that nothing inside quotes is read as a name.
    strings = []

    def keep(m):
        strings.append(m.group(0)[1:-1])
        return f'"\x00{len(strings) - 1}\x00"'

    text = re.sub(r'"(?:[^"\\]|\\.)*"', keep, expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    # Grouping clauses name labels, not metrics.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)

    def restore(s):
        return re.sub(r"\x00(\d+)\x00", lambda m: strings[int(m.group(1))], s)

    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", text):
        name = m.group(1)
        if name in PROMQL_KEYWORDS:
            name = None
        matchers = []
        for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', m.group(2)):
            matchers.append((lm.group(1), lm.group(2), restore(lm.group(3))))
        found.append((name, matchers))
    bare = re.sub(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{[^}]*\}", " ", text)
    bare = re.sub(r'"[^"]*"', " ", bare)
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", bare):
        token, call = m.group(1), m.group(2)
        if call or token.lower() in PROMQL_KEYWORDS:
            continue
        found.append((token, []))
    return found


def dashboard_queries():
    data = json.loads(DASHBOARD.read_text())
    queries = []

    def walk(node, where):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                queries.append((where, node["expr"]))
            for key, value in node.items():
                walk(value, f"{where}.{key}" if key != "panels" else where)
        elif isinstance(node, list):
            for item in node:
                title = item.get("title") if isinstance(item, dict) else None
                walk(item, f"{where} panel {title!r}" if title else where)

    walk(data.get("panels", []), "dashboard")
    for var in data.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            inner = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]+\s*\)\s*", query)
            queries.append((f"dashboard variable {var['name']}", inner.group(1) if inner else query))
    return queries


def rule_queries():
    rules = yaml.safe_load(RULES.read_text())
    queries, recorded = [], set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            queries.append((f"rules.yml {name}", rule["expr"]))
            if "record" in rule:
                recorded.add(rule["record"])
    return queries, recorded


def test_queries():
    tests = yaml.safe_load(RULE_TESTS.read_text())
    queries = []
    for test in tests.get("tests", []):
        name = test.get("name", "?")
        for series in test.get("input_series", []):
            queries.append((f"rules_test.yml {name!r} input", series["series"]))
        for case in test.get("promql_expr_test", []):
            queries.append((f"rules_test.yml {name!r} expr", case["expr"]))
    return queries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", help="also parse the dashboard's queries with this promtool")
    parser.add_argument("--scraped", help="a scrape of a running xpsync's /metrics to find every used metric in")
    args = parser.parse_args()

    metrics, pending = expected_metrics()
    for name in PENDING_LABELS:
        if not series_of(name, metrics):
            print(f"PENDING_LABELS names {name}, which src/metrics.rs does not register", file=sys.stderr)
            return 1
    known = dict(metrics)
    for name in PROCESS_METRICS | SCRAPE_METRICS:
        known[name] = set()
    literals = source_literals()
    rule_qs, recorded = rule_queries()
    dash_qs = dashboard_queries()
    queries = dash_qs + rule_qs + test_queries()

    problems = []
    used = set()
    for where, expr in queries:
        for name, matchers in selectors(interpolate(expr)):
            if name is not None:
                if ":" in name:
                    if name not in recorded:
                        problems.append(f"{where}: {name} is not recorded by deploy/prometheus/rules.yml")
                        continue
                    allowed = None  # recorded series carry whatever their rule keeps
                elif name in known:
                    allowed = known[name] | TARGET_LABELS
                    used.add(name)
                else:
                    problems.append(f"{where}: {name} is not a metric src/metrics.rs registers "
                                    "(nor a process_ metric, nor up)")
                    continue
            else:
                allowed = None
            for label, op, value in matchers:
                if label == "__name__":
                    continue
                if allowed is not None and label not in allowed:
                    problems.append(f"{where}: {name} has no label {label!r} "
                                    f"(it has {', '.join(sorted(allowed))})")
                if (op == "=" and label not in TARGET_LABELS | CONFIGURED_LABELS | {"le"} and value
                        and value not in literals):
                    problems.append(f"{where}: {label}=\"{value}\": no such value in src/")

    if args.scraped:
        families = set(re.findall(r"^# TYPE (\S+) ", pathlib.Path(args.scraped).read_text(), re.M))
        for name in sorted(used - SCRAPE_METRICS):
            if name not in families and re.sub(r"_(bucket|sum|count)$", "", name) not in families:
                problems.append(f"{name} is used by deploy/ but absent from the scrape {args.scraped}")

    if args.promtool:
        # Each dashboard query as a recording rule: promtool parses it.
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
                {"record": f"dashboard:query_{i}", "expr": interpolate(expr)}
                for i, (_, expr) in enumerate(dash_qs)]}]}, f)
        result = subprocess.run([args.promtool, "check", "rules", f.name],
                                capture_output=True, text=True)
        pathlib.Path(f.name).unlink()
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            for n in sorted({int(n) for n in re.findall(r"rule (\d+)", output)}):
                where, expr = dash_qs[n - 1]
                problems.append(f"{where}: promtool cannot parse {expr!r}")
            problems.append("promtool check rules on the dashboard's queries:\n" + output)

    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"metric names: {len(queries)} queries use {len(used)} metrics, all of them exported "
          f"({len(metrics)} registered in src/metrics.rs)")
    if pending:
        print("metric names: note: labels used by deploy/ that src/metrics.rs does not register yet "
              "(issue 24, accepted until it does): "
              + ", ".join(f"{s} {{{', '.join(sorted(l))}}}" for s, l in sorted(pending.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
