"""What a request costs in instructions: the host (and the axum echo) under callgrind, counting every
instruction every thread runs per request (background writers included, the kernel not). Counts
barely move between runs, so a capability's few per cent show where wall-clock rows on this shared
machine carry ±15 % of noise (benches/throughput.sh section 2 measures the same rows in CPU time).

Rows: the axum echo; fraud-features' feature-style predict with the log at its default level (info)
and at warn; then each optional capability off and on (throughput.py's section 2 settings).

For each row: the server starts under `valgrind --tool=callgrind --instr-atstart=no` (near native
speed until counting starts), answers WARM requests, its counters are zeroed, it answers N requests
(h2load, HTTP/1.1, 2 connections), the counters are dumped and divided by N.

Under valgrind the host reserves at most 4 instance slots (its address space holds no more than a
few 4 GiB memory reservations) and runs one or two instances per version; the count per request does
not depend on either.

Usage: benches/request-cost.sh   (N=2000 WARM=300; CAPABILITIES=log,shadow picks rows by name)
"""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import throughput as tp

N = int(os.environ.get("N", "2000"))
WARM = int(os.environ.get("WARM", "300"))
# Section 2's configuration, in the slots valgrind leaves room for.
CONFIG = (tp.BASE_CONFIG.replace("[host]\n", "[host]\ntotal_instances = 4\n", 1)
          .replace("min_instances = 2\nmax_instances = 4", "min_instances = 1\nmax_instances = 2"))
assert "total_instances" in CONFIG and "max_instances = 2" in CONFIG
DEFAULTS = "[host]\ntotal_instances = 4\n[models.default]\nmin_instances = 1\nmax_instances = 2\n"


def callgrind(out: pathlib.Path) -> tuple[str, ...]:
    return ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p")


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def h2load(url: str, body: pathlib.Path, n: int) -> None:
    out = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "2", "-d", str(body),
                          "-H", "content-type: application/json", url],
                         check=True, capture_output=True, text=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not done or int(done.group(1)) != n:
        raise SystemExit(f"{url}: not every request succeeded:\n{out}")


def count(process: subprocess.Popen, out: pathlib.Path, url: str, body: pathlib.Path) -> float:
    """Instructions per request of `process` (running under callgrind) answering `url`."""
    control(process.pid, "--instr=on")
    h2load(url, body, WARM)
    control(process.pid, "--zero")
    h2load(url, body, N)
    control(process.pid, "--dump")
    dumps = sorted(out.parent.glob(f"{out.name}.{process.pid}.*"), key=lambda p: p.stat().st_mtime)
    totals = re.search(r"^totals: (\d+)", dumps[-1].read_text(), re.M)
    return int(totals.group(1)) / N


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def row(name: str, instructions: float, note: str = "") -> float:
    print(f"{name:<44}{instructions:>12,.0f}  {note}", flush=True)
    return instructions


def main() -> None:
    work = pathlib.Path(sys.argv[1])
    fraud = work / "fraud.json"
    fraud.write_text((tp.ROOT / "sample-models/fraud-features/example-request.json").read_text())
    out = work / "callgrind.out"
    print(f"{N} requests per row after {WARM} to warm; instructions per request, every thread\n")
    print(f"{'target':<44}{'instructions':>12}")

    echo = subprocess.Popen([*callgrind(out), tp.ECHO, f"127.0.0.1:{tp.ECHO_PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until = time.time() + 60
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", "-XPOST", "-H", "content-type: application/json",
                              "--data", "{}", f"http://127.0.0.1:{tp.ECHO_PORT}/echo"]).returncode != 0:
            if time.time() > until:
                raise SystemExit("the echo did not start")
            time.sleep(0.2)
        floor = row("axum echo", count(echo, out, f"http://127.0.0.1:{tp.ECHO_PORT}/echo", fraud))
    finally:
        stop(echo)

    valgrind = dict(prefix=callgrind(out), ready_seconds=600)
    predict = "/v1/models/fraud-features/predict"
    for name, log in [("fraud-features predict, log at info (default)", ""),
                      ("fraud-features predict, log at warn", "warn")]:
        host = tp.Host(work, f"defaults-{log or 'info'}", [("fraud-features", "1", tp.fraud_files())],
                       DEFAULTS, log=log, **valgrind)
        try:
            served = count(host.process, out, host.url + predict, fraud)
            row(name, served, f"{served / floor:.2f}x the echo")
        finally:
            host.stop()

    print(f"\n{'capability':<30}{'off':>12}{'on':>12}{'cost':>9}")
    for name, settings in tp.wanted_capabilities():
        results = {}
        for state in ("off", "on"):
            host = tp.start_capability(work, name, state, settings,
                                       host_options=valgrind, base=CONFIG)
            try:
                results[state] = count(host.process, out, host.url + predict, fraud)
            finally:
                host.stop()
        cost = results["on"] / results["off"] - 1
        print(f"{name:<30}{results['off']:>12,.0f}{results['on']:>12,.0f}{cost:>+9.1%}", flush=True)


if __name__ == "__main__":
    main()
