#!/usr/bin/env python3
"""Soak: a host under mixed steady traffic, a stream of retrained versions, hostile neighbours and
restarts, for a set time. Prints the host's RSS, open fds, threads, metric series, versions listed,
p99 and error counts after the first 30 reloads and at the end, and their ratios.

Driven by benches/soak.sh (which builds and starts the host); standard library only, so it runs
anywhere the host does. Every request goes to 127.0.0.1.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time


def percentile(samples, p):
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


class Host:
    """The `ferry serve` process, restartable on the same store and port."""

    def __init__(self, args):
        self.args = args
        self.proc = None

    def start(self):
        log = open(os.path.join(self.args.work, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [self.args.ferry, "serve", "--listen", f"127.0.0.1:{self.args.port}",
             "--store", os.path.join(self.args.work, "store"),
             "--cache-dir", os.path.join(self.args.work, "cache"),
             "--config", os.path.join(self.args.work, "ferry.toml")],
            stdout=log, stderr=log)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if request("GET", self.args.port, "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("the host did not become ready")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)

    def sample(self):
        pid = self.proc.pid
        status = open(f"/proc/{pid}/status").read()
        field = lambda name: int(next(l for l in status.splitlines() if l.startswith(name)).split()[1])
        metrics = request("GET", self.args.port, "/metrics")[1].decode()
        series = sum(1 for l in metrics.splitlines() if l and not l.startswith("#"))
        models = json.loads(request("GET", self.args.port, "/v1/models")[1])
        versions = sum(len(m["versions"]) for m in models["models"])
        return {
            "rss_mb": field("VmRSS:") / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": field("Threads:"),
            "series": series,
            "versions": versions,
        }


def request(method, port, path, body=None, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        if own:
            conn.close()


class Traffic:
    """Closed-loop callers of the healthy models; latencies and failures per window."""

    def __init__(self, args, restarting):
        self.args = args
        self.restarting = restarting
        self.lock = threading.Lock()
        self.latencies = []
        self.failures = 0
        self.failures_in_restarts = 0
        self.calls = 0
        self.stop = threading.Event()

    def take_window(self):
        with self.lock:
            window, self.latencies = self.latencies, []
            return window

    def caller(self, path, body):
        conn = None
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.args.port, timeout=30)
                status, _ = request("POST", self.args.port, path, body,
                                    {"content-type": "application/json"}, conn)
            except (OSError, http.client.HTTPException):
                conn, status = None, 0
            took = time.perf_counter() - started
            with self.lock:
                self.calls += 1
                if status == 200:
                    self.latencies.append(took)
                elif self.restarting.is_set():
                    self.failures_in_restarts += 1
                else:
                    self.failures += 1
            if self.args.pause:
                time.sleep(self.args.pause)

    def scrape(self):
        while not self.stop.is_set():
            try:
                request("GET", self.args.port, "/metrics")
            except (OSError, http.client.HTTPException):
                pass
            self.stop.wait(5)

    def hostile(self, path):
        """A neighbour whose every call fails (loops to its deadline, or traps), at a steady rate."""
        while not self.stop.is_set():
            try:
                request("POST", self.args.port, path, b"{}", {"content-type": "application/json"})
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)


def multipart(parts):
    boundary = "ferry-soak-7d1e"
    body = b""
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{name}\"\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def reload(args, n, component_sha, weights, tests):
    """A weights-only update (same trees, trailing spaces: a new sha256) and a promote."""
    version = f"r{n}"
    body, ctype = multipart([("component_sha256", component_sha.encode()),
                             ("weights", weights + b" " * n), ("tests", tests)])
    status, answer = request("PUT", args.port, f"/v1/models/diabetes-gbdt/versions/{version}",
                             body, {"content-type": ctype})
    if status != 201:
        raise SystemExit(f"upload {version}: {status} {answer[:300]}")
    status, answer = request("PUT", args.port, "/v1/models/diabetes-gbdt/aliases/production",
                             json.dumps({"version": version}).encode(),
                             {"content-type": "application/json"})
    if status != 200:
        raise SystemExit(f"promote {version}: {status} {answer[:300]}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ferry", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--port", type=int, default=18191)
    p.add_argument("--seconds", type=float, default=1800)
    p.add_argument("--reloads", type=int, default=0, help="stop after this many reloads (0: by time)")
    p.add_argument("--reload-every", type=float, default=1.0)
    p.add_argument("--restart-every", type=float, default=600, help="seconds; 0: never")
    p.add_argument("--callers", type=int, default=4)
    p.add_argument("--pause", type=float, default=0.002, help="between a caller's requests")
    p.add_argument("--models", required=True, help="target/models")
    p.add_argument("--samples", required=True, help="sample-models")
    args = p.parse_args()

    restarting = threading.Event()
    host = Host(args)
    host.start()
    models = json.loads(request("GET", args.port, "/v1/models/diabetes-gbdt")[1])
    component_sha = models["versions"][0]["component_sha256"]
    weights = open(os.path.join(args.models, "diabetes-gbdt.weights"), "rb").read()
    tests = open(os.path.join(args.models, "diabetes-gbdt.tests.json"), "rb").read()

    traffic = Traffic(args, restarting)
    bodies = {
        "/v1/models/fraud-features/predict": open(os.path.join(args.samples, "fraud-features/example-request.json"), "rb").read(),
        "/v2/models/diabetes-gbdt/infer": open(os.path.join(args.samples, "diabetes-gbdt/example-request.json"), "rb").read(),
    }
    threads = [threading.Thread(target=traffic.caller, args=(path, body), daemon=True)
               for i in range(args.callers) for path, body in [list(bodies.items())[i % len(bodies)]]]
    threads += [threading.Thread(target=traffic.hostile, args=(f"/v1/models/{m}/predict",), daemon=True)
                for m in ("loop", "trap")]
    # Scraped as Prometheus would (every 5 s): the host drops idle series at a scrape.
    threads.append(threading.Thread(target=traffic.scrape, daemon=True))
    for t in threads:
        t.start()

    started = time.time()
    last_restart = started
    reloads, first, first_p99 = 0, None, None
    while True:
        elapsed = time.time() - started
        if (args.reloads and reloads >= args.reloads) or (not args.reloads and elapsed >= args.seconds):
            break
        reloads += 1
        reload(args, reloads, component_sha, weights, tests)
        if reloads == 30:
            time.sleep(2)
            traffic.take_window()
            time.sleep(10)
            first, first_p99 = host.sample(), percentile(traffic.take_window(), 0.99)
            print(f"after 30 reloads: {first}, p99 {first_p99 * 1000:.2f} ms", flush=True)
        if reloads % 100 == 0:
            print(f"{reloads} reloads, {elapsed:.0f} s, failures {traffic.failures}", flush=True)
        if args.restart_every and time.time() - last_restart >= args.restart_every:
            restarting.set()
            host.stop()
            host.start()
            time.sleep(1)
            restarting.clear()
            last_restart = time.time()
            print(f"restarted after {reloads} reloads", flush=True)
        time.sleep(args.reload_every)
    time.sleep(2)
    traffic.take_window()
    time.sleep(10)
    last, last_p99 = host.sample(), percentile(traffic.take_window(), 0.99)
    traffic.stop.set()
    print(f"at the end: {last}, p99 {last_p99 * 1000:.2f} ms", flush=True)
    if first is None:
        raise SystemExit("fewer than 30 reloads: nothing to compare")
    print()
    print(f"{'':>12} {'after 30':>10} {'end':>10} {'ratio':>7}")
    rows = [(k, first[k], last[k]) for k in ("rss_mb", "fds", "threads", "series", "versions")]
    rows.append(("p99_ms", first_p99 * 1000, last_p99 * 1000))
    for name, a, b in rows:
        print(f"{name:>12} {a:>10.1f} {b:>10.1f} {b / a if a else float('nan'):>7.2f}")
    print(f"reloads {reloads}, calls {traffic.calls}, failed {traffic.failures} "
          f"(and {traffic.failures_in_restarts} during restarts), {time.time() - started:.0f} s")
    host.stop()
    return 0 if traffic.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
