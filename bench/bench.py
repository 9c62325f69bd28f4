#!/usr/bin/env python3
"""xpsync against rclone and s3sync, copying between two local S3 servers.

The servers are s3s-fs with their data on tmpfs (/dev/shm), on loopback, with
static keys (for G, the target is moto's, whose ListParts names each part's ETag: a
split completes from that listing, and s3s-fs lists parts without them). Datasets (L: one 1 GiB object in 16 MiB parts; S: 2,000 objects of
64 KiB; M: 200 objects of 1 to 40 MiB; G: one 2 GiB object, the fleet's split) are
copied by each tool in turn, the target emptied between runs, and the order of tools
rotated between rounds. Then the same again through the link model: a proxy in front
of each server that caps every TCP connection at 8 MiB/s and adds 100 ms each way.

Each run is timed with GNU time (wall, peak RSS, CPU) and checked: the target must
hold every key with its size, or the run counts as failed. "raw" is the
server-bound limit: plain parallel GETs and PUTs with no client-side work.

The daemon's path (S and M) runs on fauxqs, an SQS emulator that answers in
milliseconds: one S3 event notification per object (the shape S3 sends, with size
and eTag) in a fresh queue, drained by `xpsync run` ("xpsync-daemon"), by two and
four daemon processes sharing the queue ("-x2", "-x4", each with the same settings),
or by one daemon fed EventBridge "Object Created" events instead ("-eventbridge").
Its wall time runs from the daemons' start until the queue is empty and every key is
on the target. "queue-drain" is that path's limit: the same queue received and
deleted by a bare boto3 loop that copies nothing. G is copied only by the daemon:
its key's event is split into part ranges shared by one ("xpsync-split-x1") or
three ("xpsync-split-x3") daemons, each with max_parts 4, through the link model
only; its limit on these servers is rawcopy with 4 and with 12 parts at once.

Run it with bench/run; it writes bench/results.json and prints a Markdown report.
"""

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

KEY_ID = "xpsyncbench"
SECRET = "xpsync-bench-secret-key"
MIB = 1024 * 1024
SHM = "/dev/shm/xpsync-bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Process:
    def __init__(self, args, **kwargs):
        self.proc = subprocess.Popen(args, **kwargs)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Server(Process):
    def __init__(self, tools, name):
        self.root = os.path.join(SHM, name)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        self.port = free_port()
        super().__init__(
            [os.path.join(tools, "s3s-fs"), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", KEY_ID, "--secret-key", SECRET, self.root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def empty(self, bucket):
        path = os.path.join(self.root, bucket)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)


class Moto(Process):
    """moto's server, as the tests start it: the target of the split bench (G), whose
    ListParts answers with each part's ETag, the ledger a split completes from
    (s3s-fs lists parts without them). Not its source: moto reads a whole object to
    serve a range of it."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self):
        launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "emulator",
                                "moto_server.py")
        super().__init__([sys.executable, launcher, "-H", "127.0.0.1", "-p", str(self.port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def empty(self, bucket):
        """A fresh server on the same port (the link proxy stays in front of it):
        moto keeps what it was sent in memory, several times over."""
        self.stop()
        self.start()
        s3(self.endpoint).create_bucket(Bucket=bucket)


class Fauxqs(Process):
    """fauxqs (npm), the daemon's SQS queue, on 127.0.0.1."""

    def __init__(self, modules):
        launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fauxqs.mjs")
        super().__init__(["node", launcher, modules], stdout=subprocess.PIPE, text=True)
        self.endpoint = self.proc.stdout.readline().strip()
        if not self.endpoint.startswith("http"):
            raise RuntimeError("fauxqs did not start")
        self.queues = 0
        self.etags = {}

    def client(self):
        return boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)

    def fill_queue(self, source, bucket, objects, shape="s3"):
        """A fresh queue holding one "object created" event per object, in the shape
        S3 notifications have ("s3") or EventBridge's ("eventbridge")."""
        self.queues += 1
        client = self.client()
        url = client.create_queue(QueueName=f"bench-{self.queues}",
                                  Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        # The split's range queue, as the template makes one: named after the queue.
        ranges = client.create_queue(QueueName=f"bench-{self.queues}-ranges",
                                     Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
        assert ranges == url + "-ranges", (url, ranges)
        if bucket not in self.etags:  # s3s-fs lists no ETags: HEAD each object once
            s3_client = s3(source)
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                heads = pool.map(lambda key: s3_client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"'),
                                 objects)
                self.etags[bucket] = dict(zip(objects, heads))
        events = []
        for n, (key, size) in enumerate(objects.items()):
            etag = self.etags[bucket][key]
            if shape == "eventbridge":
                event = {"version": "0", "source": "aws.s3", "detail-type": "Object Created",
                         "region": "us-east-1", "resources": [f"arn:aws:s3:::{bucket}"],
                         "detail": {"bucket": {"name": bucket},
                                    "object": {"key": key, "size": size, "etag": etag, "sequencer": f"{n:016X}"}}}
            else:
                event = {"Records": [{
                    "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                    "eventTime": "2026-11-26T00:00:00.000Z", "eventName": "ObjectCreated:Put",
                    "s3": {"s3SchemaVersion": "1.0",
                           "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                           "object": {"key": key, "size": size, "eTag": etag, "sequencer": f"{n:016X}"}}}]}
            events.append(json.dumps(event))
        for i in range(0, len(events), 10):
            client.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "MessageBody": body} for n, body in enumerate(events[i:i + 10])])
        return client, url


class LinkProxy(Process):
    def __init__(self, binary, upstream, mib_per_second=8, latency_ms=100):
        super().__init__([binary, upstream, str(mib_per_second), str(latency_ms)],
                         stdout=subprocess.PIPE, text=True)
        self.endpoint = self.proc.stdout.readline().strip()


def s3(endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required",
                      max_pool_connections=64))


DATASETS = {
    "L": "one 1 GiB object stored in 16 MiB parts",
    "S": "2,000 objects of 64 KiB",
    "M": "200 objects of 1 to 40 MiB",
    "G": "one 2 GiB object, split across the fleet",
}


def put_in_parts(client, bucket, key, count):
    """An object of `count` random 16 MiB parts."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for number in range(1, count + 1):
        etag = client.upload_part(Bucket=bucket, Key=key, PartNumber=number, UploadId=upload["UploadId"],
                                  Body=os.urandom(16 * MIB))["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})


def make_datasets(source, names):
    client = s3(source)
    rng = random.Random(42)
    made = {}
    for name in names:
        bucket = f"bench-{name.lower()}"
        client.create_bucket(Bucket=bucket)
        if name in ("L", "G"):
            key, parts = ("large/object.bin", 64) if name == "L" else ("giant/object.bin", 128)
            put_in_parts(client, bucket, key, parts)
            objects = {key: parts * 16 * MIB}
        elif name == "S":
            objects = {f"small/{i:05d}.bin": 64 * 1024 for i in range(2000)}
        else:
            objects = {f"mixed/{i:04d}.bin": rng.randint(1 * MIB, 40 * MIB) for i in range(200)}
        if name in ("S", "M"):
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=os.urandom(kv[1])),
                              objects.items()))
        made[name] = (bucket, objects)
        print(f"dataset {name}: {len(objects)} objects, {sum(objects.values()) / MIB:.0f} MiB", file=sys.stderr)
    return made


def listing(endpoint, bucket):
    client = s3(endpoint)
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            found[o["Key"]] = o["Size"]
    return found


def timed(args, env, log):
    """Runs args under GNU time: (wall s, peak RSS MiB, CPU s, exit code)."""
    with tempfile.NamedTemporaryFile("r") as times:
        started = time.monotonic()
        code = subprocess.call(["/usr/bin/time", "-o", times.name, "-f", "%M %U %S", *args],
                               env=env, stdout=log, stderr=log)
        wall = time.monotonic() - started
        rss_kib, user, system = times.read().split()[-3:]
    return wall, int(rss_kib) / 1024, float(user) + float(system), code


def timed_daemons(commands, env, log, sqs, queue_url, target, bucket, objects, drained=True, timeout=900):
    """Runs daemons, each under GNU time, until the target holds every key with its
    size and (if `drained`) the queue is empty, then stops them with SIGTERM: (wall
    s, the largest peak RSS of one daemon in MiB, CPU s of all, exit code). A split's
    delayed check outlives its object by up to `transfer.split_check_delay`: its
    time runs until the object is there."""
    started = time.monotonic()
    runs = []
    for args in commands:
        times = tempfile.NamedTemporaryFile("r")
        proc = subprocess.Popen(["/usr/bin/time", "-o", times.name, "-f", "%M %U %S", *args],
                                env=env, stdout=log, stderr=log)
        runs.append((proc, times))
    wall = None
    try:
        while time.monotonic() - started < timeout and all(proc.poll() is None for proc, _ in runs):
            time.sleep(0.2)
            queued = 0
            for url in (queue_url, queue_url + "-ranges"):
                attributes = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                    "ApproximateNumberOfMessagesDelayed"],
                )["Attributes"]
                queued += sum(int(v) for v in attributes.values())
            if drained and queued:
                continue
            if listing(target, bucket) == objects:
                wall = time.monotonic() - started
                break
    finally:  # a server that died must not leave the daemons running
        for proc, times in runs:
            subprocess.call(["pkill", "-TERM", "-P", str(proc.pid)])
    code = 0
    rss = cpu = 0.0
    for proc, times in runs:
        try:
            exit_code = proc.wait(120)
        except subprocess.TimeoutExpired:
            subprocess.call(["pkill", "-KILL", "-P", str(proc.pid)])
            exit_code = proc.wait()
        code = code or exit_code
        rss_kib, user, system = times.read().split()[-3:]
        times.close()
        rss, cpu = max(rss, int(rss_kib) / 1024), cpu + float(user) + float(system)
    if wall is None:
        wall, code = time.monotonic() - started, code or 124
    return wall, rss, cpu, code


def drain(endpoint, url, expected):
    """Receives and deletes `expected` messages, copying nothing: the queue's limit."""
    client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    got = 0
    while got < expected:
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=1).get("Messages", [])
        if messages:
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])
        got += len(messages)


DAEMONS = {"xpsync-daemon": 1, "xpsync-daemon-x2": 2, "xpsync-daemon-x4": 4, "xpsync-daemon-eventbridge": 1,
           "xpsync-daemon-2-routes": 1, "xpsync-split-x1": 1, "xpsync-split-x3": 3}
# The two routes of "xpsync-daemon-2-routes": each takes half of a dataset's keys (S:
# small/00000 to 00999 and 01000 to 01999; M: mixed/0000 to 0099 and 0100 to 0199).
ROUTE_PREFIXES = {"S": ("small/00", "small/01"), "M": ("mixed/00", "mixed/01")}
QUEUED = set(DAEMONS) | {"queue-drain"}
SPLIT = {"xpsync-split-x1", "xpsync-split-x3"}
# G's server-bound limit: rawcopy with the parts of one worker, and of three.
RAW_SPLIT = {"raw-4-parts": 4, "raw-12-parts": 12}


def runs_on(tool, dataset, link):
    """Which tools copy which dataset: G only by the splitting daemons, whom it is
    for, and only through the link model; the daemon's path and its queue's limit
    on S and M."""
    if dataset == "G":
        return (tool in SPLIT or tool in RAW_SPLIT) and link != "loopback"
    if tool in SPLIT or tool in RAW_SPLIT:
        return False
    return dataset in ("S", "M") or tool not in QUEUED


def xpsync_config(path, src, dst, bucket, dataset, queue_url=None, sqs_endpoint=None, split_range_size=None,
                  routes=False):
    """`routes`: the bucket pair as two routes, each half the keys (ROUTE_PREFIXES)."""
    split = dataset == "G"
    pair = "" if routes else f'bucket = "{bucket}"'
    with open(path, "w") as f:
        f.write(f"""[source]
region = "us-east-1"
{pair}
endpoint_url = "{src}"
[source.credentials]
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
[target]
region = "us-east-1"
{pair}
endpoint_url = "{dst}"
[target.credentials]
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
[transfer]
max_objects = {128 if dataset == "S" else 32}
max_parts = {4 if split else 64}
{f'split_range_size = "{split_range_size}"' if split and split_range_size else ""}
[replicate]
tags = false
[log]
level = "warn"
format = "text"
""")
        for n, prefix in enumerate(ROUTE_PREFIXES[dataset] if routes else ()):
            f.write(f"""[[route]]
name = "half-{n + 1}"
source = {{ bucket = "{bucket}", prefix = "{prefix}" }}
target = {{ bucket = "{bucket}" }}
""")
        if queue_url:
            f.write(f"""[queue]
url = "{queue_url}"
range_url = "{queue_url}-ranges"
endpoint_url = "{sqs_endpoint}"
wait_time = "1s"
[server]
listen = "127.0.0.1:{free_port()}"
""")


def tool_commands(tool, paths, src, dst, bucket, dataset, workdir, queue_url=None, sqs_endpoint=None,
                  messages=0, split_range_size=None):
    """The commands that run `tool` (several for a fleet of daemons), and their environment."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_EC2_METADATA_DISABLED="true")
    env.pop("AWS_CA_BUNDLE", None)
    small = dataset == "S"
    if tool == "xpsync":
        config = os.path.join(workdir, f"{tool}-{dataset}.toml")
        xpsync_config(config, src, dst, bucket, dataset)
        return [[paths["xpsync"], "backfill", "--mode", "copy", "--config", config]], env
    if tool in DAEMONS:
        commands = []
        for n in range(DAEMONS[tool]):
            config = os.path.join(workdir, f"{tool}-{dataset}-{n}.toml")
            xpsync_config(config, src, dst, bucket, dataset, queue_url, sqs_endpoint, split_range_size,
                          routes=tool.endswith("routes"))
            commands.append([paths["xpsync"], "run", "--config", config])
        return commands, env
    if tool == "rclone":
        for side, endpoint in (("SRC", src), ("DST", dst)):
            env.update({f"RCLONE_CONFIG_{side}_TYPE": "s3", f"RCLONE_CONFIG_{side}_PROVIDER": "Other",
                        f"RCLONE_CONFIG_{side}_ACCESS_KEY_ID": KEY_ID,
                        f"RCLONE_CONFIG_{side}_SECRET_ACCESS_KEY": SECRET,
                        f"RCLONE_CONFIG_{side}_ENDPOINT": endpoint,
                        f"RCLONE_CONFIG_{side}_REGION": "us-east-1",
                        f"RCLONE_CONFIG_{side}_FORCE_PATH_STYLE": "true"})
        return [[paths["rclone"], "copy", f"SRC:{bucket}", f"DST:{bucket}",
                "--transfers", "128" if small else "32", "--checkers", "64",
                "--s3-upload-concurrency", "16", "--s3-chunk-size", "16M",
                "--s3-no-check-bucket", "--s3-disable-checksum"]], env
    if tool == "s3sync":
        return [[paths["s3sync"], "--source-access-key", KEY_ID, "--source-secret-access-key", SECRET,
                "--source-endpoint-url", src, "--source-force-path-style", "--source-region", "us-east-1",
                "--target-access-key", KEY_ID, "--target-secret-access-key", SECRET,
                "--target-endpoint-url", dst, "--target-force-path-style", "--target-region", "us-east-1",
                "--worker-size", "128" if small else "32", "--max-parallel-uploads", "16",
                "--multipart-chunksize", "16MiB",
                f"s3://{bucket}", f"s3://{bucket}"]], env
    if tool == "queue-drain":
        return [[sys.executable, os.path.abspath(__file__), "--drain", sqs_endpoint, queue_url,
                 str(messages)]], env
    if tool in RAW_SPLIT:
        return [[paths["rawcopy"], src, bucket, dst, bucket, str(RAW_SPLIT[tool]), "16"]], env
    if tool == "raw":
        return [[paths["rawcopy"], src, bucket, dst, bucket, "128" if small else "32", "16"]], env
    raise ValueError(tool)


def main():
    if sys.argv[1:2] == ["--drain"]:  # the queue-drain tool, run by the harness itself
        endpoint, url, count = sys.argv[2:5]
        drain(endpoint, url, int(count))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    running = "--report" not in sys.argv
    parser.add_argument("--tools", required=running, help="directory with s3s-fs, s3sync")
    parser.add_argument("--node-modules", required=running, help="directory with fauxqs")
    parser.add_argument("--xpsync", required=running)
    parser.add_argument("--rawcopy", required=running)
    parser.add_argument("--linkproxy", required=running)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datasets", default="L,S,M,G")
    parser.add_argument("--only", default=",".join(["xpsync", *DAEMONS, "rclone", "s3sync", "raw", *RAW_SPLIT,
                                                    "queue-drain"]),
                        help="tools to run (the daemons and queue-drain on S and M, the split on G only)")
    parser.add_argument("--no-link", action="store_true", help="skip the link-model runs")
    parser.add_argument("--split-range-size", help="transfer.split_range_size for G (default: xpsync's)")
    parser.add_argument("--no-loopback", action="store_true", help="only the link-model runs")
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--report", action="store_true", help="only print the report of --out")
    args = parser.parse_args()
    if args.report:
        with open(args.out) as f:
            print(report(json.load(f)))
        return

    paths = {"xpsync": args.xpsync, "rawcopy": args.rawcopy, "rclone": shutil.which("rclone"),
             "s3sync": os.path.join(args.tools, "s3sync")}
    tools = args.only.split(",")
    names = args.datasets.split(",")
    shutil.rmtree(SHM, ignore_errors=True)
    workdir = tempfile.mkdtemp(prefix="xpsync-bench-")
    servers = [(Server(args.tools, "source"), Server(args.tools, "target"))]
    if "G" in names:
        servers.append((servers[0][0], Moto()))
    proxies = []
    results = []
    queue = Fauxqs(args.node_modules) if QUEUED & set(tools) else None
    try:
        pair = {name: servers[-1] if name == "G" else servers[0] for name in names}
        datasets = {}
        for name in names:
            datasets.update(make_datasets(pair[name][0].endpoint, [name]))
            s3(pair[name][1].endpoint).create_bucket(Bucket=datasets[name][0])
        links = [] if args.no_loopback else [("loopback", {id(p): (p[0].endpoint, p[1].endpoint) for p in servers})]
        if not args.no_link:
            through = {}
            for p in servers:
                proxies.extend([LinkProxy(args.linkproxy, p[0].endpoint), LinkProxy(args.linkproxy, p[1].endpoint)])
                through[id(p)] = (proxies[-2].endpoint, proxies[-1].endpoint)
            links.append(("link 8 MiB/s per connection, 100 ms each way", through))
        with open(os.path.join(workdir, "tools.log"), "w") as log:
            for link, ends in links:
                for name in names:
                    bucket, objects = datasets[name]
                    source, target = pair[name]
                    src, dst = ends[id(pair[name])]
                    for round_ in range(args.rounds):
                        order = tools[round_ % len(tools):] + tools[:round_ % len(tools)]
                        for tool in order:
                            if not runs_on(tool, name, link):
                                continue
                            target.empty(bucket)
                            log.write(f"\n=== {link} {name} {tool} round {round_ + 1}\n")
                            log.flush()
                            if tool in QUEUED:
                                shape = "eventbridge" if tool.endswith("eventbridge") else "s3"
                                sqs, url = queue.fill_queue(source.endpoint, bucket, objects, shape)
                                commands, env = tool_commands(tool, paths, src, dst, bucket, name, workdir,
                                                              url, queue.endpoint, len(objects),
                                                              args.split_range_size)
                                if tool in DAEMONS:
                                    wall, rss, cpu, code = timed_daemons(commands, env, log, sqs, url,
                                                                         target.endpoint, bucket, objects,
                                                                         drained=tool not in SPLIT)
                                else:
                                    wall, rss, cpu, code = timed(commands[0], env, log)
                                sqs.delete_queue(QueueUrl=url)
                            else:
                                commands, env = tool_commands(tool, paths, src, dst, bucket, name, workdir)
                                wall, rss, cpu, code = timed(commands[0], env, log)
                            copied = listing(target.endpoint, bucket)
                            listed = copied == objects or tool == "queue-drain"
                            complete = code == 0 and listed
                            results.append({"link": link, "dataset": name, "tool": tool, "round": round_ + 1,
                                            "wall_s": wall, "peak_rss_mib": rss, "cpu_s": cpu, "exit": code,
                                            "complete": complete, "listed": listed, "objects": len(objects),
                                            "bytes": sum(objects.values())})
                            print(f"{link[:8]:8} {name} {tool:25} round {round_ + 1}: {wall:7.2f} s "
                                  f"{rss:7.1f} MiB {cpu:6.2f} cpu-s {'ok' if complete else 'INCOMPLETE'}",
                                  file=sys.stderr, flush=True)
                            with open(args.out, "w") as f:  # as we go: a long run can be cut short
                                json.dump(results, f, indent=1)
                    target.empty(bucket)  # its copies take memory (tmpfs) the next dataset needs
    finally:
        for p in proxies + list({id(s): s for pair_ in servers for s in pair_}.values()) + ([queue] if queue else []):
            p.stop()
        shutil.rmtree(SHM, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(report(results))


def report(results):
    lines = []
    for link in dict.fromkeys(r["link"] for r in results):
        lines.append(f"\n### {link}\n")
        lines.append("| dataset | tool | median wall | throughput | peak RSS | CPU | its time ÷ xpsync's | runs exit 0 / all keys there |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name in dict.fromkeys(r["dataset"] for r in results):
            rows = [r for r in results if r["link"] == link and r["dataset"] == name]
            medians = {}
            for tool in dict.fromkeys(r["tool"] for r in rows):
                runs = [r for r in rows if r["tool"] == tool]
                wall = statistics.median(r["wall_s"] for r in runs)
                medians[tool] = (wall, runs)
            base = (medians.get("xpsync") or medians.get("xpsync-split-x1") or (None,))[0]
            for tool, (wall, runs) in medians.items():
                first = runs[0]
                if name == "S" or tool == "queue-drain":
                    rate = f"{first['objects'] / wall:.0f} messages/s" if tool == "queue-drain" else \
                        f"{first['objects'] / wall:.0f} objects/s"
                else:
                    rate = f"{first['bytes'] / MIB / wall:.0f} MiB/s"
                rss = statistics.median(r["peak_rss_mib"] for r in runs)
                cpu = statistics.median(r["cpu_s"] for r in runs)
                ratio = f"{wall / base:.2f}" if base and wall != base else "-"
                clean = sum(r["exit"] == 0 for r in runs)
                whole = sum(r.get("listed", r["complete"]) for r in runs)
                lines.append(f"| {name} | {tool} | {wall:.2f} s | {rate} | {rss:.0f} MiB | {cpu:.1f} s | {ratio} "
                             f"| {clean}/{len(runs)} / {whole}/{len(runs)} |")
    lines.extend(scaling(results))
    return "\n".join(lines)


def scaling(results):
    """The daemon's rate against backfill's, and the fleet's against one worker's."""
    lines = ["\n### The daemon and the fleet (ratios of medians)\n",
             "| link | dataset | one daemon ÷ backfill (rate) | 2 daemons ÷ 1 | 4 daemons ÷ 1 | EventBridge ÷ S3 events | 2 routes ÷ 1 (rate) | split: 3 workers ÷ 1 | raw: 12 parts ÷ 4 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for link in dict.fromkeys(r["link"] for r in results):
        for name in dict.fromkeys(r["dataset"] for r in results):
            walls = {}
            for r in results:
                if r["link"] == link and r["dataset"] == name:
                    walls.setdefault(r["tool"], []).append(r["wall_s"])
            median = {tool: statistics.median(w) for tool, w in walls.items()}

            def speedup(slow, fast):
                return f"{median[slow] / median[fast]:.2f}×" if slow in median and fast in median else "-"
            cells = [speedup("xpsync", "xpsync-daemon"), speedup("xpsync-daemon", "xpsync-daemon-x2"),
                     speedup("xpsync-daemon", "xpsync-daemon-x4"),
                     speedup("xpsync-daemon", "xpsync-daemon-eventbridge"),
                     speedup("xpsync-daemon", "xpsync-daemon-2-routes"),
                     speedup("xpsync-split-x1", "xpsync-split-x3"), speedup("raw-4-parts", "raw-12-parts")]
            if any(c != "-" for c in cells):
                lines.append(f"| {link[:8]} | {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
