"""Memory benchmarks of snapshots and the host memory budget (run by benches/memory.sh).

Each part starts real `ferry serve` processes (release build) on loopback ports over a fresh store, and
prints its figures beside a baseline measured in the same run:

  pss        16 instances of geo-embeddings with a GEO_MB (default 953.6 MiB = 10^9 bytes: 1 GB) table: the host's RSS and PSS
             with snapshots, against the same host with `snapshots = false` (every instance runs init and
             holds its own copy; run with BASELINE_INSTANCES instances, default 16, when memory allows).
             Goal: ≤ 1.2 GB in total with snapshots.
  update     weights-only updates of a 100 MiB geo-embeddings version: upload → ready (goal ≤ 2 s), and
             the promote that follows.
  budget     1,000 registered versions (fraud-features, each with its own config, so each its own
             snapshot) under `max_resident_bytes` that fits 50: resident bytes, cold-request p50/p99
             against warm-request p50/p99, evictions.
  hygiene    RELOADS (default 1000) weights-only updates + promotes of geo-embeddings under steady load:
             host RSS and request p99 over the first and the last tenth (goal: within 10%).
  graphs     1 and 16 instances of digits-graph sharing one host-side graph (an MLP of GRAPH_HIDDEN,
             default 2048, wide: 64 → 2048 → 2048 → 10, 17 MB), against digits-onnx running the same
             network with tract inside each instance: host PSS, and what the graph is charged.

Usage: python benches/memory.py [pss] [update] [budget] [hygiene] [graphs]   (all when none named)
"""
import json
import os
import pathlib
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
FERRY = os.environ.get("FERRY_BIN", str(ROOT / "target/release/ferry"))
PYTHON = str(ROOT / "target/py/bin/python")
MODELS = ROOT / "target/models"
MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=600):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url):
    status, body = http("GET", url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def smaps_rollup(pid) -> dict:
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def mem_available() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Host:
    """One `ferry serve` over `work/store` and `work/cache`."""

    def __init__(self, work: pathlib.Path, config: str):
        self.work = work
        (work / "ferry.toml").write_text(config)
        self.port = free_port()
        self.started = time.time()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "server.log", "ab")
        self.proc = subprocess.Popen(
            [FERRY, "serve", "--listen", f"127.0.0.1:{self.port}", "--store", str(work / "store"),
             "--cache-dir", str(work / "cache"), "--config", str(work / "ferry.toml")],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "FERRY_LOG": "ferry=warn"})
        started = time.time()
        while time.time() - started < 1800:
            if self.proc.poll() is not None:
                raise SystemExit(f"ferry serve exited; see {work}/server.log")
            try:
                if http("GET", self.base + "/v2/health/ready", timeout=2)[0] == 200:
                    self.ready_seconds = time.time() - started
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("ferry serve was not ready in 30 minutes")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def model(self, name):
        return get_json(f"{self.base}/v1/models/{name}")

    def version(self, model, version):
        for v in self.model(model)["versions"]:
            if v["version"] == version:
                return v
        return None

    def metrics(self) -> str:
        return http("GET", self.base + "/metrics")[1].decode()

    def infer(self, model, body: bytes):
        status, answer = http("POST", f"{self.base}/v2/models/{model}/infer", body,
                              {"Content-Type": "application/json"})
        assert status == 200, answer
        return answer

    def predict(self, model, body: bytes):
        started = time.perf_counter()
        status, answer = http("POST", f"{self.base}/v1/models/{model}/predict", body,
                              {"Content-Type": "application/json"})
        return status, time.perf_counter() - started, answer


def ferry_add(work, model, version, component, weights=None, tests=None, config=None, graphs=()):
    cmd = [FERRY, "add", str(component), "--model", model, "--version", version,
           "--store", str(work / "store"), "--cache-dir", str(work / "cache")]
    for name, path in graphs:
        cmd += ["--graph", f"{name}={path}"]
    if weights:
        cmd += ["--weights", str(weights)]
    if tests:
        cmd += ["--tests", str(tests)]
    if config:
        cmd += ["--config", str(config)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def train_geo(mb, out: pathlib.Path):
    subprocess.run([PYTHON, str(ROOT / "sample-models/geo-embeddings/training/train.py"),
                    "--mb", str(mb), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out / "geo-embeddings.weights", out / "geo-embeddings.tests.json"


def geo_request() -> bytes:
    return (ROOT / "sample-models/geo-embeddings/example-request.json").read_bytes()


def load(host, model, body, threads, per_thread, latencies=None):
    def run():
        for _ in range(per_thread):
            status, took, answer = host.predict(model, body)
            assert status == 200, answer
            if latencies is not None:
                latencies.append(took)
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def random_trips(host, cells, threads, per_thread):
    """Predictions between uniformly random cells of the whole table."""
    def run(seed):
        rng = random.Random(seed)
        for _ in range(per_thread):
            body = json.dumps({"features": {"pickup_cell": rng.randrange(cells), "dropoff_cell": rng.randrange(cells),
                                            "hour": rng.randrange(24), "distance_km": rng.uniform(0.5, 30)}}).encode()
            status, _, answer = host.predict("geo-embeddings", body)
            assert status == 200, answer
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def multipart(parts):
    boundary = "ferry-bench-boundary-1f3a"
    body = bytearray()
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{name}\"\r\n\r\n").encode()
        body += data
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(body)


def wait_state(host, model, version, limit=600):
    started = time.time()
    while time.time() - started < limit:
        v = host.version(model, version)
        if v and v["state"] in ("ready", "failed"):
            return v
        time.sleep(0.005)
    raise SystemExit(f"{model}@{version} not ready in {limit}s")


def untested_row_flipper(weights: bytes, tests: dict):
    """New weights that differ from `weights` in one embedding row no self-test reads."""
    cells = int.from_bytes(weights[8:12], "little")
    dim = int.from_bytes(weights[12:16], "little")
    table = len(weights) - cells * dim * 4
    used = set()
    for case in tests["cases"]:
        f = case["request"]["features"]
        used.update((f["pickup_cell"], f["dropoff_cell"]))
    rng = random.Random(7)

    def flip():
        cell = rng.randrange(cells)
        while cell in used:
            cell = rng.randrange(cells)
        data = bytearray(weights)
        at = table + cell * dim * 4
        data[at:at + dim * 4] = rng.randbytes(dim * 4)
        return bytes(data)
    return flip


# ---------------------------------------------------------------------------------------------------


def part_pss():
    mb = float(os.environ.get("GEO_MB", "953.6"))
    baseline_n = int(os.environ.get("BASELINE_INSTANCES", "16"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-pss-"))
    try:
        weights, tests = train_geo(mb, work)
        with open(weights, "rb") as f:
            cells = int.from_bytes(f.read(12)[8:12], "little")
        ferry_add(work, "geo-embeddings", "1", MODELS / "geo-embeddings.wasm", weights, tests)
        spread = None
        memory = int((mb + 512) * MIB)
        rows = []
        for label, snapshots, n in [("snapshots", "true", 1), ("snapshots", "true", 16),
                                    ("init per instance", "false", 1), ("init per instance", "false", baseline_n)]:
            if snapshots == "false" and mem_available() < (n + 2) * mb * MIB:
                n = max(1, int(mem_available() / (mb * MIB)) - 3)
                print(f"  (only {n} instances without snapshots: memory available)")
            config = (f"[host]\nsnapshots = {snapshots}\n[models.geo-embeddings]\nmemory_bytes = {memory}\n"
                      f"min_instances = {n}\nmax_instances = {n}\ninit_deadline_ms = 600000\n")
            host = Host(work, config)
            load(host, "geo-embeddings", geo_request(), n, 25)
            figures = smaps_rollup(host.proc.pid)
            v = host.version("geo-embeddings", "1")
            if snapshots == "true" and n == 16:
                # The example request touches a few table pages; trips over the whole city touch many,
                # each paged in once and shared by every instance that reads it.
                random_trips(host, cells, 16, 1250)
                spread = smaps_rollup(host.proc.pid)
            host.stop()
            rows.append((label, n, figures["Rss"], figures["Pss"], host.ready_seconds, v["memory"]))
            if snapshots == "true" and not v["snapshot"]["taken"]:
                print(f"  no snapshot: {v['snapshot']['reason']}")
        print(f"pss: geo-embeddings with a {mb} MiB table (weights file {weights.stat().st_size / 1e9:.3f} GB)")
        for label, n, rss, pss, ready, mem in rows:
            print(f"  {label:18} {n:2} instances: RSS {rss / MIB:8.0f} MiB  PSS {pss / MIB:8.0f} MiB  "
                  f"(ready in {ready:.1f} s; shared {mem['shared_bytes'] / MIB:.0f} MiB, private {mem['private_bytes'] / MIB:.0f} MiB)")
        snap1, snap16, base1, basen = rows
        print(f"  snapshots, 16 instances, after 20,000 trips between uniformly random cells: RSS "
              f"{spread['Rss'] / MIB:.0f} MiB (each instance's mapping of a shared page counted again), "
              f"PSS {spread['Pss'] / MIB:.0f} MiB (goal ≤ 1.2 GB; all {mb:.0f} MiB of the table paged in "
              f"would add at most that, once)")
        print(f"  snapshots: {(snap16[3] - snap1[3]) / 15 / MIB:.2f} MiB PSS per extra instance; "
              f"16 instances in {snap16[3] / 1e9:.2f} GB PSS (goal ≤ 1.2 GB)")
        if basen[1] > 1:
            per = (basen[3] - base1[3]) / (basen[1] - 1)
            print(f"  init per instance: {per / MIB:.0f} MiB PSS per extra instance → 16 instances ≈ "
                  f"{(base1[3] + 15 * per) / 1e9:.2f} GB; snapshots use {(base1[3] + 15 * per) / snap16[3]:.1f}× less")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_update():
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-update-"))
    try:
        weights_path, tests_path = train_geo(100, work)
        weights = weights_path.read_bytes()
        tests = json.loads(tests_path.read_text())
        ferry_add(work, "geo-embeddings", "1", MODELS / "geo-embeddings.wasm", weights_path, tests_path)
        host = Host(work, f"[models.geo-embeddings]\nmemory_bytes = {1 << 30}\n")
        v1 = host.version("geo-embeddings", "1")
        status, _ = http("PUT", host.base + "/v1/models/geo-embeddings/aliases/production",
                         json.dumps({"version": "1"}).encode(), {"Content-Type": "application/json"})
        assert status == 200, status
        flip = untested_row_flipper(weights, tests)
        ready_times, promote_times = [], []
        for i in range(2, 7):
            ctype, body = multipart([("component_sha256", v1["component_sha256"].encode()),
                                     ("weights", flip()), ("tests", tests_path.read_bytes())])
            started = time.perf_counter()
            status, answer = http("PUT", f"{host.base}/v1/models/geo-embeddings/versions/{i}", body,
                                  {"Content-Type": ctype})
            assert status == 201, answer
            v = wait_state(host, "geo-embeddings", str(i))
            assert v["state"] == "ready", v
            ready_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            status, answer = http("PUT", host.base + "/v1/models/geo-embeddings/aliases/production",
                                  json.dumps({"version": str(i)}).encode(), {"Content-Type": "application/json"})
            assert status == 200, answer
            promote_times.append(time.perf_counter() - started)
        host.stop()
        print(f"update: weights-only updates of a {len(weights) / MIB:.0f} MiB geo-embeddings version "
              f"(upload, snapshot, compile, self-tests → ready): median {statistics.median(ready_times):.2f} s, "
              f"max {max(ready_times):.2f} s (goal ≤ 2 s); promote median {statistics.median(promote_times) * 1e3:.0f} ms")
        print(f"  first load of version 1 on a cold cache: {v1['load_seconds']:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_all(host, versions, limit=3600):
    """Seconds from the host's start until `versions` versions are ready; fails on a failed one."""
    while True:
        listed = [v for m in get_json(host.base + "/v1/models")["models"] for v in m["versions"]]
        failed = [v for v in listed if v["state"] == "failed"]
        assert not failed, failed[0]
        ready = sum(1 for v in listed if v["state"] == "ready")
        elapsed = time.time() - host.started
        if ready >= versions:
            return elapsed
        assert elapsed < limit, f"{ready} of {versions} ready after {elapsed:.0f} s"
        time.sleep(0.2)


def part_budget():
    versions = int(os.environ.get("VERSIONS", "1000"))
    hot = int(os.environ.get("HOT", "50"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-budget-"))
    try:
        for i in range(versions):
            config = work / f"config-{i}.json"
            config.write_text(json.dumps({"tenant": i}))
            ferry_add(work, f"fraud-{i:04}", "1", MODELS / "fraud-features.wasm", config=config)
        # One version's resident size, measured, sets the budget.
        probe = Host(work, "[host]\n")
        probe_ready = wait_all(probe, versions)
        sizes = [v["memory"]["shared_bytes"] + v["memory"]["private_bytes"]
                 for m in get_json(probe.base + "/v1/models")["models"] for v in m["versions"]]
        probe.stop()
        one = max(sizes)
        budget = one * hot
        host = Host(work, f"[host]\nmax_resident_bytes = {budget}\n")
        restart_ready = wait_all(host, versions)
        body = (ROOT / "sample-models/fraud-features/example-request.json").read_bytes()
        warm, cold = [], []
        rng = random.Random(3)
        hot_models = [f"fraud-{i:04}" for i in range(hot - 5)]
        for m in hot_models:
            host.predict(m, body)
        for n in range(4000):
            if n % 10 == 0:
                m = f"fraud-{rng.randrange(hot, versions):04}"
                status, took, answer = host.predict(m, body)
                cold.append(took)
            else:
                m = hot_models[n % len(hot_models)]
                status, took, answer = host.predict(m, body)
                warm.append(took)
            assert status == 200, answer
        text = host.metrics()
        host.stop()

        def metric(name, kind=None):
            total = 0.0
            for line in text.splitlines():
                if line.startswith(name) and (kind is None or f'kind="{kind}"' in line):
                    total += float(line.rsplit(" ", 1)[1])
            return total
        print(f"budget: {versions} registered versions, budget {budget / MIB:.1f} MiB = {hot} × {one / MIB:.2f} MiB "
              f"(first start, {versions} snapshots taken: {probe_ready:.0f} s; restart on the cache: {restart_ready:.1f} s)")
        print(f"  resident: {metric('ferry_host_memory_bytes', 'versions') / MIB:.1f} MiB held by versions, "
              f"process RSS {metric('ferry_host_memory_bytes', 'rss') / MIB:.0f} MiB, "
              f"{int(metric('ferry_version_resident'))} versions resident")
        print(f"  warm requests p50 {percentile(warm, 50) * 1e3:.2f} ms p99 {percentile(warm, 99) * 1e3:.2f} ms; "
              f"cold (evicted version) p50 {percentile(cold, 50) * 1e3:.2f} ms p99 {percentile(cold, 99) * 1e3:.2f} ms "
              f"→ cold/warm p50 {percentile(cold, 50) / percentile(warm, 50):.1f}×")
        print(f"  evictions {int(metric('ferry_version_evictions_total'))}, "
              f"cold loads {int(metric('ferry_version_cold_loads_total'))}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_hygiene():
    reloads = int(os.environ.get("RELOADS", "1000"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-hygiene-"))
    try:
        weights_path = MODELS / "geo-embeddings.weights"
        tests_path = MODELS / "geo-embeddings.tests.json"
        weights = weights_path.read_bytes()
        tests = json.loads(tests_path.read_text())
        ferry_add(work, "geo-embeddings", "1", MODELS / "geo-embeddings.wasm", weights_path, tests_path)
        host = Host(work, "[models.geo-embeddings]\nmin_instances = 2\nmax_instances = 4\n")
        component = host.version("geo-embeddings", "1")["component_sha256"]
        http("PUT", host.base + "/v1/models/geo-embeddings/aliases/production",
             json.dumps({"version": "1"}).encode(), {"Content-Type": "application/json"})
        samples = []  # (time, latency, status)
        stop = threading.Event()
        body = geo_request()

        def steady():
            while not stop.is_set():
                status, took, _ = host.predict("geo-embeddings", body)
                samples.append((time.time(), took, status))
                time.sleep(0.002)
        workers = [threading.Thread(target=steady) for _ in range(2)]
        for w in workers:
            w.start()
        flip = untested_row_flipper(weights, tests)
        rss = []
        started = time.time()
        for i in range(2, reloads + 2):
            ctype, payload = multipart([("component_sha256", component.encode()), ("weights", flip()),
                                        ("tests", tests_path.read_bytes())])
            status, answer = http("PUT", f"{host.base}/v1/models/geo-embeddings/versions/{i}", payload,
                                  {"Content-Type": ctype})
            assert status == 201, answer
            v = wait_state(host, "geo-embeddings", str(i))
            assert v["state"] == "ready", v
            status, answer = http("PUT", host.base + "/v1/models/geo-embeddings/aliases/production",
                                  json.dumps({"version": str(i)}).encode(), {"Content-Type": "application/json"})
            assert status == 200, answer
            rss.append((time.time(), smaps_rollup(host.proc.pid)["Rss"]))
        stop.set()
        for w in workers:
            w.join()
        host.stop()
        took = time.time() - started
        tenth = (samples[-1][0] - samples[0][0]) / 10
        first = [s[1] for s in samples if s[0] < samples[0][0] + tenth]
        last = [s[1] for s in samples if s[0] > samples[-1][0] - tenth]
        failed = sum(1 for s in samples if s[2] != 200)
        n = max(1, len(rss) // 10)
        rss_first = statistics.median(r for _, r in rss[:n])
        rss_last = statistics.median(r for _, r in rss[-n:])
        p99_first, p99_last = percentile(first, 99), percentile(last, 99)
        print(f"hygiene: {reloads} weights-only updates + promotes of geo-embeddings in {took:.0f} s under steady load "
              f"({len(samples)} requests, {failed} failed)")
        print(f"  host RSS first tenth {rss_first / MIB:.0f} MiB, last tenth {rss_last / MIB:.0f} MiB → "
              f"{rss_last / rss_first:.3f}× (goal within 10%)")
        print(f"  request p99 first tenth {p99_first * 1e3:.2f} ms, last tenth {p99_last * 1e3:.2f} ms → "
              f"{p99_last / p99_first:.3f}×; p50 {percentile(first, 50) * 1e3:.2f} → {percentile(last, 50) * 1e3:.2f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_graphs():
    hidden = os.environ.get("GRAPH_HIDDEN", "2048")
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-graphs-"))
    try:
        graph = work / "mlp.onnx"
        subprocess.run([PYTHON, str(ROOT / "benches/graphs/make_mlp.py"), "--out", str(graph), "--hidden", hidden],
                       check=True, stdout=subprocess.DEVNULL)
        body = (ROOT / "sample-models/digits-onnx/example-request.json").read_bytes()
        rows = []
        for model in ["digits-graph", "digits-onnx"]:
            # One model per host, so the figures are its own; the compile cache is filled by a first
            # start that is not measured (a compile's memory stays with the process).
            dir = work / model
            dir.mkdir()
            if model == "digits-graph":
                ferry_add(dir, model, "1", MODELS / "digits-graph.wasm", graphs=[("model", graph)])
            else:
                ferry_add(dir, model, "1", MODELS / "digits-onnx.wasm", weights=graph)
            for n in [1, 1, 16]:
                config = (f"[host]\nrequire_self_tests = false\n[models.{model}]\nmin_instances = {n}\n"
                          f"max_instances = {n}\nmemory_bytes = 536870912\n")
                host = Host(dir, config)
                # Every instance answers (n threads over n instances).
                workers = [threading.Thread(target=lambda: [host.infer(model, body) for _ in range(20)])
                           for _ in range(n)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                figures = smaps_rollup(host.proc.pid)
                v = host.version(model, "1")
                host.stop()
                rows.append((model, n, figures["Pss"], v["memory"]))
            del rows[-3]  # the start that filled the cache
        print(f"graphs: 64 → {hidden} → {hidden} → 10 ({graph.stat().st_size / 1e6:.1f} MB of ONNX), "
              f"one model per host, 1 and 16 instances (host PSS)")
        for model, n, pss, mem in rows:
            how = "host-side graph (wasi:nn, onnxruntime)" if model == "digits-graph" else "tract in each instance"
            print(f"  {model:13} {how:40} {n:2} instances: PSS {pss / MIB:7.0f} MiB  "
                  f"(graph {mem.get('graph_bytes', 0) / MIB:.0f} MiB, once; snapshot {mem['shared_bytes'] / MIB:.0f} MiB "
                  f"shared, {mem['private_bytes'] / MIB:.0f} MiB private)")
        g1, g16, t1, t16 = rows
        print(f"  per extra instance: host-side graph {(g16[2] - g1[2]) / 15 / MIB:.2f} MiB PSS, "
              f"tract in the guest {(t16[2] - t1[2]) / 15 / MIB:.2f} MiB PSS")
    finally:
        shutil.rmtree(work, ignore_errors=True)


PARTS = {"pss": part_pss, "update": part_update, "budget": part_budget, "hygiene": part_hygiene,
         "graphs": part_graphs}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(PARTS)
    for name in chosen:
        PARTS[name]()
        sys.stdout.flush()
