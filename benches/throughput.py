"""The throughput benchmark's driver (run it through benches/throughput.sh, which builds what it needs).

One run, one machine, one load generator (wrk, closed loop, CONNECTIONS connections) for every row:

1. The floor and the request path: a bare axum JSON echo (benches/src/bin/axum-baseline.rs) against
   fraud-features' feature-style predict. Requests/s, p50, p99, the server's CPU per request, and the
   ratio to the echo.
2. What each optional capability costs: fraud-features with every capability off, then with each one
   on alone (a CPU share, the breaker, fuel metering, the prediction log at 100 %, a shadow at 100 %,
   determinism, drift monitoring at the default 5 % and at 100 %), each beside an "all off" run measured just before it, so that drift in the machine's
   load shows as drift, not as cost. The cost is the server's CPU per request, on over off.
3. Graph models over HTTP and gRPC, unbatched and with dynamic batching: digits-graph (a small MLP
   through wasi:nn) and the same component serving a 4.5 MB MLP graph (benches/graphs/make_mlp.py),
   one row per request, CONNECTIONS concurrent callers. gRPC load comes from h2load (nghttp2) sending
   a prebuilt ModelInfer request with raw contents; its answers are counted by the server (a gRPC
   error is an HTTP 200), so "non-2xx" is every request that did not succeed. Batched over unbatched
   is printed per protocol.

Rows print as they finish; the table at the end repeats them.

Usage: python3 benches/throughput.py WORKDIR   (DURATION=8 CONNECTIONS=16 SECTIONS=1,2,3 by default;
       CAPABILITIES=drift,log picks section 2's rows by name)
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
FERRY = ROOT / "target/release/ferry"
ECHO = ROOT / "target/release/axum-baseline"
MODELS = ROOT / "target/models"
DURATION = int(os.environ.get("DURATION", "8"))
# Which parts run: 1 the floor and the request path, 2 the capabilities, 3 graphs and batching.
SECTIONS = set(os.environ.get("SECTIONS", "1,2,3").split(","))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
# How long the first request of a batch waits for others, in the batched rows.
BATCH_DELAY_US = int(os.environ.get("BATCH_DELAY_US", "2000"))
# Rows a batch holds at most, in the batched rows. The callers split between the instances (one per
# core): with room for every caller, one batch takes them all while the other instance idles.
MAX_BATCH_SIZE = int(os.environ.get("MAX_BATCH_SIZE", str(max(1, CONNECTIONS // (os.cpu_count() or 2)))))
HOST_PORT, ECHO_PORT = 18180, 18190
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_ready(url: str, seconds: float = 120) -> None:
    until = time.time() + seconds
    while time.time() < until:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def request(method: str, url: str, body: dict) -> None:
    data = json.dumps(body).encode()
    r = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(r, timeout=30) as answer:
        answer.read()


class Host:
    """`ferry serve` on a store of its own, with `config` (TOML text)."""

    def __init__(self, work: pathlib.Path, name: str, models: list[tuple[str, str, list[str]]], config: str,
                 prefix: tuple[str, ...] = (), log: str = "warn", ready_seconds: float = 120):
        self.dir = work / name
        store = self.dir / "store"
        self.dir.mkdir(parents=True, exist_ok=True)
        for model, version, files in models:
            subprocess.run([FERRY, "add", *files, "--model", model, "--version", version, "--store", store],
                           check=True, stdout=subprocess.DEVNULL)
        (self.dir / "ferry.toml").write_text(config)
        self.log = open(self.dir / "ferry.log", "w")
        # `prefix` runs the host under another program (benches/request_cost.py: valgrind); `log` is
        # FERRY_LOG ("" for the default a user gets).
        env = {k: v for k, v in os.environ.items() if k != "FERRY_LOG"}
        if log:
            env["FERRY_LOG"] = log
        self.process = subprocess.Popen(
            [*prefix, FERRY, "serve", "--listen", f"127.0.0.1:{HOST_PORT}", "--store", store,
             "--config", self.dir / "ferry.toml"],
            stdout=self.log, stderr=self.log, env=env)
        self.url = f"http://127.0.0.1:{HOST_PORT}"
        wait_ready(self.url + "/v2/health/ready", ready_seconds)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def h2load(url: str, body: pathlib.Path, pid: int, failed, seconds: int = DURATION) -> dict:
    """As `wrk`, over gRPC: h2load with CONNECTIONS connections of one stream each POSTing `body` (a
    gRPC frame). `failed()` is the server's count of failed answers, so failures carried in gRPC's
    trailers (an HTTP 200) are counted too."""
    log = body.with_suffix(".h2load.log")
    args = ["h2load", "-c", str(CONNECTIONS), "-m", "1", "-t", "1", "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers"]
    subprocess.run([*args, "-D", "1", url], check=True, stdout=subprocess.DEVNULL)
    before, failed_before = cpu_seconds(pid), failed()
    out = subprocess.run([*args, "-D", str(seconds), "--log-file", str(log), url],
                         check=True, capture_output=True, text=True).stdout
    used = cpu_seconds(pid) - before
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    times = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000 if times else float("nan")
    return {
        "rps": rps,
        "p50": pick(0.50),
        "p99": pick(0.99),
        "cpu_us": used * 1e6 / max(done, 1),
        "errors": failed() - failed_before,
    }


def failures(host_url: str, model: str) -> int:
    """The server's count of `model`'s inferences that failed (every protocol, every status)."""
    with urllib.request.urlopen(f"{host_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.findall(rf'^ferry_requests_total{{model="{re.escape(model)}",version="[^"]*",route="infer",status="(\d+)"}} (\d+)',
                       text, re.M)
    return sum(int(n) for status, n in found if status != "200")


def grpc_infer_frame(model: str, row: list[float]) -> bytes:
    """A gRPC frame holding `inference.ModelInferRequest` for `model`: one FP32 input `input` of shape
    [1, len(row)] in `raw_input_contents` (encoded here: the benchmark needs no protobuf library)."""
    import struct

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:  # length-delimited
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    shape = varint(1) + varint(len(row))
    tensor = field(1, b"input") + field(2, b"FP32") + field(3, shape)
    message = field(1, model.encode()) + field(5, tensor) + field(7, struct.pack(f"<{len(row)}f", *row))
    return b"\x00" + len(message).to_bytes(4, "big") + message


def wrk(url: str, body: pathlib.Path, pid: int, seconds: int = DURATION) -> dict:
    """A closed-loop run against `url` POSTing `body`: requests/s, p50/p99 (ms), the server's CPU per
    request (µs) and the answers that were not 2xx."""
    script = body.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.body = io.open("{body}"):read("*a")\n')
    # Warm: instances, connections, caches.
    subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", "-d1s", "-s", script, url], check=True,
                   stdout=subprocess.DEVNULL)
    before = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", script, url],
                         check=True, capture_output=True, text=True).stdout
    used = cpu_seconds(pid) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def latency(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "cpu_us": used * 1e6 / max(total, 1),
        "errors": int(errors.group(1)) if errors else 0,
    }


ROWS: list[tuple[str, dict, str]] = []


def row(name: str, result: dict, note: str = "") -> dict:
    ROWS.append((name, result, note))
    print(f"{name:<40}{result['rps']:>10.0f}{result['p50']:>9.3f}{result['p99']:>9.3f}"
          f"{result['cpu_us']:>10.1f}{result['errors']:>8}  {note}", flush=True)
    return result


HEADER = f"{'target':<40}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs':>10}{'non-2xx':>8}"

BASE_CONFIG = """
[host]
deterministic = {deterministic}
fuel = {fuel}
cpu_share = 1.0
[breaker]
after = {breaker}
[models.default]
min_instances = 2
max_instances = 4
{extra}
"""

OFF = {"deterministic": "false", "fuel": "false", "breaker": 0, "extra": ""}
# A per-model section replaces [models.default]: the same instances, plus a cap no call reaches.
FUEL_CAP = "min_instances = 2\nmax_instances = 4\nfuel = 1000000000000"


def fraud_files() -> list[str]:
    return [str(MODELS / "fraud-features.wasm")]


def capability_host(work: pathlib.Path, name: str, *, shadow: bool = False, profile: bool = False,
                    neighbour: bool = False, host_options: dict | None = None,
                    base: str = BASE_CONFIG, **settings) -> Host:
    config = base.format(**{**OFF, **settings})
    # With its training profile, the version is watched for drift at the configured share.
    files = fraud_files() + (["--profile", str(MODELS / "fraud-features.profile.json")] if profile else [])
    models = [("fraud-features", "1", files)]
    if neighbour:
        # Another model on the host, not called: what its settings cost the measured one.
        models.append(("neighbour", "1", fraud_files()))
    if shadow:
        models.append(("fraud-features", "2", fraud_files()))
    host = Host(work, name, models, config, **(host_options or {}))
    if shadow:
        # Version 1 answers (the alias pins it), version 2 gets a copy of every request.
        request("PUT", f"{host.url}/v1/models/fraud-features/aliases/production", {"version": "1"})
    return host


def wanted_capabilities() -> list[tuple[str, dict]]:
    """Section 2's rows: each optional capability's settings (CAPABILITIES=drift,shadow keeps only
    the rows whose names contain one of these)."""
    capabilities = [
        ("CPU share 0.25", dict(extra="[models.fraud-features]\ncpu_share = 0.25")),
        ("breaker (after = 5)", dict(breaker=5)),
        # [host] fuel: every model's fuel counted, for the cost reports.
        ("fuel metering (every model)", dict(fuel="true")),
        # A fuel cap: that model's calls run on the engine that counts fuel ...
        ("fuel limit (this model)", dict(extra=f"[models.fraud-features]\n{FUEL_CAP}")),
        # ... and the others' on the one that counts none.
        ("fuel limit (another model)", dict(neighbour=True, extra=f"[models.neighbour]\n{FUEL_CAP}")),
        ("determinism", dict(deterministic="true")),
        ("prediction log 100 %", dict(log=True)),
        ("shadow 100 %", dict(shadow=True)),
        ("drift monitoring 5 %", dict(profile=True)),
        ("drift monitoring 100 %", dict(profile=True, extra="[monitoring]\nsample_percent = 100")),
    ]
    wanted = [w for w in os.environ.get("CAPABILITIES", "").split(",") if w]
    return [c for c in capabilities if not wanted or any(w in c[0] for w in wanted)]


def start_capability(work: pathlib.Path, name: str, state: str, settings: dict, **options) -> Host:
    """A host with every capability off, or (`state` "on") with `name`'s `settings` on."""
    settings = dict(settings)
    log = settings.pop("log", False)
    # The neighbour model is on the host in both states: the row is what its settings cost.
    options.setdefault("neighbour", settings.pop("neighbour", False))
    host = capability_host(work, f"{name}-{state}".replace(" ", "-").replace("%", "pc"),
                           **options, **(settings if state == "on" else {}))
    if state == "on" and log:
        request("PUT", f"{host.url}/v1/models/fraud-features/traffic", {"log": {"percent": 100}})
    if state == "on" and settings.get("shadow"):
        request("PUT", f"{host.url}/v1/models/fraud-features/traffic",
                {"shadow": {"version": "2", "percent": 100}})
    return host


def main() -> None:
    work = pathlib.Path(sys.argv[1])
    fraud = work / "fraud.json"
    fraud.write_text((ROOT / "sample-models/fraud-features/example-request.json").read_text())

    print(f"{DURATION} s per row, {CONNECTIONS} connections, wrk -t1; CPU µs: the server's CPU per request\n")
    print(HEADER)

    if "1" in SECTIONS:
        # 1. The floor and the request path.
        echo = subprocess.Popen([ECHO, f"127.0.0.1:{ECHO_PORT}"])
        try:
            time.sleep(0.5)
            floor = row("axum echo (the floor)", wrk(f"http://127.0.0.1:{ECHO_PORT}/echo", fraud, echo.pid))
            host = Host(work, "defaults", [("fraud-features", "1", fraud_files())],
                        "[models.default]\nmin_instances = 2\nmax_instances = 4\n")
            try:
                url = f"{host.url}/v1/models/fraud-features/predict"
                served = row("fraud-features predict (defaults)", wrk(url, fraud, host.process.pid))
                floor2 = row("axum echo (again)", wrk(f"http://127.0.0.1:{ECHO_PORT}/echo", fraud, echo.pid))
            finally:
                host.stop()
        finally:
            echo.terminate()
            echo.wait()
        floor_rps = (floor["rps"] + floor2["rps"]) / 2
        ratio = served["rps"] / floor_rps
        ROWS[1] = (ROWS[1][0], served, f"{ratio:.2f}x the echo (mean of both echo rows)")
        print(f"\nP1: fraud-features predict / axum echo = {served['rps']:.0f} / {floor_rps:.0f} = {ratio:.2f}\n")

    if "2" in SECTIONS:
        # 2. Each capability on its own, beside an all-off run.
        capabilities = wanted_capabilities()
        costs = []
        print(HEADER)
        for name, settings in capabilities:
            results = {}
            for state in ("off", "on"):
                host = start_capability(work, name, state, settings)
                try:
                    url = f"{host.url}/v1/models/fraud-features/predict"
                    results[state] = row(f"  {name}: {state}", wrk(url, fraud, host.process.pid))
                finally:
                    host.stop()
            cost = results["on"]["cpu_us"] / results["off"]["cpu_us"] - 1
            costs.append((name, results["off"], results["on"], cost))

        print("\nPer-capability cost (fraud-features; CPU per request on over off, and req/s):")
        print(f"{'capability':<24}{'off µs':>9}{'on µs':>9}{'cost':>8}{'off req/s':>11}{'on req/s':>11}")
        for name, off, on, cost in costs:
            print(f"{name:<24}{off['cpu_us']:>9.1f}{on['cpu_us']:>9.1f}{cost:>+8.1%}{off['rps']:>11.0f}{on['rps']:>11.0f}")

    if "3" in SECTIONS:
        # 3. Graph models over HTTP and gRPC, unbatched and batched.
        mlp = ROOT / "target/graphs/mlp.onnx"
        digits = json.loads((ROOT / "sample-models/digits-graph/example-request.json").read_text())
        one = digits["inputs"][0]
        row_width = 64
        one["shape"] = [1, row_width]
        one["data"] = one["data"][:row_width]
        graph_body = work / "digits-one.json"
        graph_body.write_text(json.dumps(digits))
        print("\n" + HEADER)
        # One instance per core: a batch waits for a free instance while it gathers.
        batching = (f"max_batch_size = {MAX_BATCH_SIZE}\nmax_queue_delay_us = {BATCH_DELAY_US}\n"
                    f"max_instances = {os.cpu_count() or 2}\n")
        speedups = []
        for name, graph in [("digits-graph", MODELS / "digits-graph.graph.model.onnx"), ("mlp-4.5MB-graph", mlp)]:
            files = [str(MODELS / "digits-graph.wasm"), "--graph", f"model={graph}"]
            if name == "digits-graph":
                files += ["--tests", str(MODELS / "digits-graph.tests.json")]
            frame = work / f"{name}.grpc"
            frame.write_bytes(grpc_infer_frame(name, one["data"]))
            results = {}
            for mode in ("unbatched", "batched"):
                config = ("[host]\nrequire_self_tests = false\n[models.default]\nmin_instances = 2\nmax_instances = 4\n"
                          + (f'[models."{name}"]\n{batching}' if mode == "batched" else ""))
                host = Host(work, f"{name}-{mode}", [(name, "1", files)], config)
                try:
                    url = f"{host.url}/v2/models/{name}/infer"
                    results[("HTTP", mode)] = row(f"{name} {mode}, HTTP", wrk(url, graph_body, host.process.pid))
                    grpc_url = f"{host.url}/inference.GRPCInferenceService/ModelInfer"
                    results[("gRPC", mode)] = row(f"{name} {mode}, gRPC", h2load(
                        grpc_url, frame, host.process.pid, lambda: failures(host.url, name)))
                finally:
                    host.stop()
            for protocol in ("HTTP", "gRPC"):
                off, on = results[(protocol, "unbatched")], results[(protocol, "batched")]
                speedups.append((name, protocol, on["rps"] / off["rps"], off["p99"], on["p99"]))

        print(f"\nDynamic batching (max_batch_size {MAX_BATCH_SIZE}, max_queue_delay_us {BATCH_DELAY_US}, an instance per core; "
          f"{CONNECTIONS} callers, 1 row each):")
        print(f"{'model':<20}{'protocol':<10}{'batched/unbatched req/s':>25}{'p99 unbatched':>15}{'p99 batched':>13}")
        for name, protocol, speedup, p99_off, p99_on in speedups:
            print(f"{name:<20}{protocol:<10}{speedup:>24.2f}x{p99_off:>13.3f}ms{p99_on:>11.3f}ms")

    print("\nAll rows:")
    print(HEADER)
    for name, result, note in ROWS:
        print(f"{name:<40}{result['rps']:>10.0f}{result['p50']:>9.3f}{result['p99']:>9.3f}"
              f"{result['cpu_us']:>10.1f}{result['errors']:>8}  {note}")


if __name__ == "__main__":
    main()
