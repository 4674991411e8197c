#!/usr/bin/env python3
"""The hostile-caller probes of issue 19, against a host with the default `[http]` settings, each
printed with its figure: peak RSS under 16 concurrent 32 MB OIP JSON bodies (half to unknown models),
RSS under a 2 GB management body, the version/alias name clash, 400 stalled connections (time until
the host closed them all, while a normal request is answered), and callers hanging up in a queue.

Usage: benches/hostile_callers.py FERRY_BIN   (benches/hostile_callers.sh builds and runs it)
Every connection goes to 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

PORT = 18192
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kb(pid):
    status = open(f"/proc/{pid}/status").read()
    field = lambda n: int(next(l for l in status.splitlines() if l.startswith(n)).split()[1])
    return field("VmRSS:"), field("VmHWM:")


def raw(request: bytes, body_source=None, read_timeout=120):
    """Sends a request (and then whatever `body_source` yields); answers the first response line."""
    s = socket.create_connection(("127.0.0.1", PORT))
    s.settimeout(read_timeout)
    try:
        s.sendall(request)
        for chunk in body_source or []:
            s.sendall(chunk)
    except OSError:
        pass
    try:
        answer = s.recv(4096).decode(errors="replace")
    except OSError as e:
        answer = f"({e})"
    s.close()
    return answer.split("\r\n", 1)[0]


def call(method, path, body=b"", ctype="application/json"):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ctype}\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def main():
    ferry = sys.argv[1]
    work = tempfile.mkdtemp()
    store = os.path.join(work, "store")
    hostile = os.path.join(ROOT, "target/test-guests/hostile-guest.wasm")
    for model, config in [("echo", {}), ("spin", {"attack": "spin"})]:
        path = os.path.join(work, f"{model}.json")
        json.dump(config, open(path, "w"))
        subprocess.run([ferry, "add", hostile, "--model", model, "--version", "1", "--config", path,
                        "--store", store], check=True, capture_output=True)
    with open(os.path.join(work, "ferry.toml"), "w") as f:
        f.write("[host]\nrequire_self_tests = false\n"
                "[models.spin]\nmin_instances = 1\nmax_instances = 1\nmax_queue = 4\n"
                "queue_timeout_ms = 20000\ndeadline_ms = 10000\n")
    server = subprocess.Popen([ferry, "serve", "--listen", f"127.0.0.1:{PORT}", "--store", store,
                               "--cache-dir", os.path.join(work, "cache"),
                               "--config", os.path.join(work, "ferry.toml")],
                              stderr=open(os.path.join(work, "log"), "wb"))
    try:
        for _ in range(3000):
            try:
                if call("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        pid = server.pid

        # 1. 16 concurrent 32 MB OIP JSON bodies, half to models that do not exist.
        n = (32 << 20) // 4
        body = (b'{"inputs":[{"name":"fp32","datatype":"FP32","shape":[' + str(n).encode()
                + b'],"data":[' + b",".join([b"0.5"] * n) + b"]}]}")
        rss0, peak0 = rss_kb(pid)
        results = []
        def send(i):
            path = "/v2/models/echo/infer" if i % 2 == 0 else f"/v2/models/nobody-{i}/infer"
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            results.append(raw(head, [body]))
        threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        _, peak1 = rss_kb(pid)
        statuses = sorted(r.split(" ")[1] if " " in r else r for r in results)
        print(f"16 x 32 MB OIP JSON bodies (8 to unknown models): peak RSS {peak0 // 1024} -> "
              f"{peak1 // 1024} MB (+{(peak1 - peak0) // 1024} MB); statuses {statuses}")

        # 2. A 2 GB body to a management route (declared; 64 MB of it sent).
        rss0, _ = rss_kb(pid)
        chunk = b" " * (1 << 20)
        head = (b"PUT /v1/models/echo/traffic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2147483648\r\n\r\n")
        status = raw(head, (chunk for _ in range(64)))
        rss1, _ = rss_kb(pid)
        print(f"2 GB management body: {status!r}; RSS {rss0 // 1024} -> {rss1 // 1024} MB")

        # 3. A version uploaded under an alias's name.
        call("PUT", "/v1/models/echo/aliases/canary", b'{"version": "1"}')
        wasm = open(hostile, "rb").read()
        status, answer = call("PUT", "/v1/models/echo/versions/canary", wasm, "application/wasm")
        print(f"version named like alias `canary`: {status} {answer.decode()[:160]}")

        # 4. 400 stalled connections: half silent, half half a header.
        socks = []
        for i in range(400):
            s = socket.create_connection(("127.0.0.1", PORT))
            if i % 2:
                s.sendall(b"POST /v1/models/echo/predict HTTP/1.1\r\nHost: x\r\nConte")
            socks.append(s)
        started = time.time()
        status, _ = call("POST", "/v1/models/echo/predict", b'{"a": 1}')
        served_in = time.time() - started
        closed = 0
        for s in socks:
            s.settimeout(60)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except OSError:
                closed += 1
        print(f"400 stalled connections: a normal request answered {status} in {served_in * 1000:.0f} ms; "
              f"{closed} closed by the host within {time.time() - started:.1f} s")
        [s.close() for s in socks]

        # 5. Callers hanging up while queued (queue of 4, 8 hang up), then 3 callers that wait.
        long = threading.Thread(target=call, args=("POST", "/v1/models/spin/predict", b'{"ms": 2500}'))
        long.start()
        time.sleep(0.5)
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", PORT))
            s.sendall(b'POST /v1/models/spin/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{"ms": 1}')
            time.sleep(0.03)
            s.close()
        time.sleep(0.2)
        waited = []
        def wait_call():
            waited.append(call("POST", "/v1/models/spin/predict", b'{"ms": 1}')[0])
        ws = [threading.Thread(target=wait_call) for _ in range(3)]
        [w.start() for w in ws]
        [w.join() for w in ws]
        long.join()
        print(f"8 callers hung up in a queue of 4; then 3 callers that wait got {sorted(waited)}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
