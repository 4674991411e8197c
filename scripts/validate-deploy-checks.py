#!/usr/bin/env python3
"""Consistency checks of deploy/ that no schema can make: that the files agree with each other and
with what the `ferry` host accepts. Run by scripts/validate-deploy.sh (in its venv, for PyYAML);
`validate-deploy-checks.py CHECK`, CHECK one of: kustomization, manifests, dockerfile.

Prints nothing and exits 0 when every check holds; otherwise one line per problem, exit 1.
"""

import json
import re
import shlex
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the venv has tomli instead.
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KUSTOMIZATION = "kustomization.yaml"
# Validated like the rest but never applied: real Secrets come from the user's secret manager.
NOT_LISTED = {"secrets.example.yaml"}

LABEL = ("app.kubernetes.io/name", "ferry")
# What `ferry serve` accepts (the interface agreed with the host); each takes one value.
SERVE_FLAGS = {"--listen", "--store", "--cache-dir", "--config"}
ENV_NAMES = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP",
    "FERRY_ADMIN_TOKEN", "FERRY_INFERENCE_TOKEN", "FERRY_METRICS_TOKEN", "FERRY_HOST_ID", "FERRY_CACHE_DIR", "FERRY_LOG_FORMAT",
}
# Where the host declares its configuration file's structure (serde, deny_unknown_fields: a key it does not
# know stops `ferry serve` at start, so every pod would crash-loop). Section -> (file, struct).
CONFIG_STRUCTS = {
    None: ("host/src/config.rs", "HostConfig"),
    "host": ("host/src/config.rs", "HostSection"),
    "store": ("host/src/config.rs", "StoreSection"),
    "cache": ("host/src/config.rs", "CacheSection"),
    "models.*": ("host/src/runtime/limits.rs", "ModelLimits"),
}
READY, LIVE, METRICS = "/v2/health/ready", "/v2/health/live", "/metrics"
# The host's defaults when ferry.toml leaves them out (host/src/runtime/limits.rs, host/src/config.rs).
DEFAULT_DEADLINE_MS, DEFAULT_QUEUE_TIMEOUT_MS = 1000, 100
DEFAULT_MAX_UPLOAD_BYTES = 4 << 30
# Time after the last request has been answered for responses to flush and connections to close.
DRAIN_MARGIN_S = 5

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load_docs(path):
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifest_files():
    return sorted(p.name for p in K8S.iterdir() if p.suffix in (".yaml", ".yml") and p.name != KUSTOMIZATION)


def listed_resources():
    kustomization = load_docs(K8S / KUSTOMIZATION)[0]
    return kustomization.get("resources") or []


# --- kustomization ---------------------------------------------------------------------------------

def check_kustomization():
    where = f"deploy/kubernetes/{KUSTOMIZATION}"
    docs = load_docs(K8S / KUSTOMIZATION)
    if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
        problem(where, "must hold exactly one Kustomization")
        return
    resources = listed_resources()
    if not resources:
        problem(where, "lists no resources")
    seen = set()
    for name in resources:
        if name in seen:
            problem(where, f"lists {name} twice")
        seen.add(name)
        if "/" in name or not (K8S / name).is_file():
            problem(where, f"lists {name}, which is not a file in deploy/kubernetes")
        if name in NOT_LISTED:
            problem(where, f"lists {name}, an example that must never be applied")
    for name in manifest_files():
        if name not in seen and name not in NOT_LISTED:
            problem(where, f"does not list {name} (list it, or remove the file)")
    for name in NOT_LISTED:
        if not (K8S / name).is_file():
            problem(f"deploy/kubernetes/{name}", "is missing")


# --- manifests -------------------------------------------------------------------------------------

def objects():
    """(file, object) for every manifest, the example Secrets included."""
    out = []
    for name in manifest_files():
        for doc in load_docs(K8S / name):
            out.append((name, doc))
    return out


def quantity_bytes(q):
    """A Kubernetes memory/storage quantity in bytes (the suffixes used in practice)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"unreadable quantity {q!r}")
    return int(float(m.group(1)) * units.get(m.group(2), 1))


def serve_flags(args, where):
    """Checks a `serve ...` argument list; returns {flag: value}."""
    if not args or args[0] != "serve":
        problem(where, f"arguments must start with `serve`, not {args[:1]}")
        return {}
    flags, rest = {}, args[1:]
    while rest:
        flag = rest.pop(0)
        value = None
        if flag.startswith("--") and "=" in flag:
            flag, value = flag.split("=", 1)
        if flag not in SERVE_FLAGS:
            problem(where, f"`ferry serve` does not take {flag!r} (it takes {', '.join(sorted(SERVE_FLAGS))})")
            if value is None and rest and not rest[0].startswith("--"):
                rest.pop(0)  # its value
            continue
        if value is None:
            if not rest or rest[0].startswith("--"):
                problem(where, f"{flag} has no value")
                continue
            value = rest.pop(0)
        if flag in flags:
            problem(where, f"{flag} is given twice")
        flags[flag] = value
    return flags


def listen_port(value, where):
    m = re.fullmatch(r"(?:\[[0-9a-fA-F:]+\]|[0-9.]+):([0-9]+)", value or "")
    if not m:
        problem(where, f"--listen {value!r} is not ADDR:PORT")
        return None
    return int(m.group(1))


def check_manifests():
    objs = objects()
    by_kind = {}
    for name, obj in objs:
        where = f"deploy/kubernetes/{name}"
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL[0]) != LABEL[1]:
            what = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
            problem(where, f"{what} lacks label {LABEL[0]}: {LABEL[1]}")
        by_kind.setdefault(obj.get("kind"), []).append((name, obj))
    for name in listed_resources():
        if (K8S / name).is_file() and len(load_docs(K8S / name)) != 1:
            problem(f"deploy/kubernetes/{name}", "must hold exactly one object (one file per object)")

    def one(kind):
        found = [(n, o) for n, o in by_kind.get(kind, []) if n not in NOT_LISTED]
        if len(found) != 1:
            problem("deploy/kubernetes", f"expected one {kind}, found {len(found)}")
            return None, {}
        return found[0]

    dep_file, dep = one("Deployment")
    svc_file, svc = one("Service")
    hpa_file, hpa = one("HorizontalPodAutoscaler")
    pdb_file, pdb = one("PodDisruptionBudget")
    cm_file, cm = one("ConfigMap")
    sa_file, sa = one("ServiceAccount")
    if not dep:
        return
    W = f"deploy/kubernetes/{dep_file}"
    spec = dep.get("spec", {})
    template = spec.get("template", {})
    pod_labels = template.get("metadata", {}).get("labels", {})
    pod_annotations = template.get("metadata", {}).get("annotations", {})
    pod = template.get("spec", {})

    def selects(selector, where, what):
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problem(where, f"{what} {selector} does not select the Deployment's pods {pod_labels}")

    selects(spec.get("selector", {}).get("matchLabels"), W, "selector")
    if svc:
        selects(svc.get("spec", {}).get("selector"), f"deploy/kubernetes/{svc_file}", "selector")
    if pdb:
        selects(pdb.get("spec", {}).get("selector", {}).get("matchLabels"), f"deploy/kubernetes/{pdb_file}", "selector")

    containers = pod.get("containers", [])
    if len(containers) != 1:
        problem(W, "expected exactly one container")
        return
    c = containers[0]
    if "command" in c:
        problem(W, "sets `command`: the image's entrypoint is the ferry binary, give `args` only")
    flags = serve_flags(c.get("args", []), W)
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    http_port = ports.get("http")
    if http_port is None:
        problem(W, "the container has no port named http")
    port = listen_port(flags.get("--listen"), W)
    if port is not None and port != http_port:
        problem(W, f"--listen port {port} is not the containerPort {http_port}")
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/].*)?", flags.get("--store", "")):
        problem(W, f"--store {flags.get('--store')!r} is not s3://BUCKET/PREFIX")

    # Volumes behind --cache-dir and --config.
    volumes = {v.get("name"): v for v in pod.get("volumes", [])}
    mounts = {m.get("mountPath"): m for m in c.get("volumeMounts", [])}
    cache_dir = flags.get("--cache-dir")
    cache_mount = mounts.get(cache_dir)
    cache_volume = volumes.get(cache_mount.get("name")) if cache_mount else None
    if not cache_volume or "emptyDir" not in cache_volume:
        problem(W, f"--cache-dir {cache_dir!r} is not an emptyDir mount")
        cache_volume = None
    config_path = flags.get("--config", "")
    config_dir, _, config_key = config_path.rpartition("/")
    config_mount = mounts.get(config_dir)
    config_volume = volumes.get(config_mount.get("name")) if config_mount else None
    config_text = None
    if not config_volume or "configMap" not in config_volume:
        problem(W, f"--config {config_path!r} is not in a ConfigMap mount")
    elif cm and config_volume["configMap"].get("name") != cm["metadata"]["name"]:
        problem(W, f"the config volume names ConfigMap {config_volume['configMap'].get('name')!r}, "
                   f"not {cm['metadata']['name']!r}")
    elif cm:
        config_text = (cm.get("data") or {}).get(config_key)
        if config_text is None:
            problem(f"deploy/kubernetes/{cm_file}", f"has no key {config_key!r} (named by --config)")
    for path, m in mounts.items():
        if m.get("name") not in volumes:
            problem(W, f"mount {path} names no volume")

    # Environment: only names the host reads; Secret references that the example Secrets provide.
    example_secrets = {o["metadata"]["name"]: set((o.get("stringData") or {}) | (o.get("data") or {}))
                       for n, o in by_kind.get("Secret", [])}
    env = {}
    for e in c.get("env", []):
        env[e.get("name")] = e
        if e.get("name") not in ENV_NAMES:
            problem(W, f"env {e.get('name')} is not one the host reads ({', '.join(sorted(ENV_NAMES))})")
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref.get("key") not in example_secrets.get(ref.get("name"), set()):
            problem(W, f"env {e['name']} reads Secret {ref.get('name')}/{ref.get('key')}, "
                       f"which secrets.example.yaml does not show")
    host_id = (env.get("FERRY_HOST_ID", {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
    if host_id != "metadata.name":
        problem(W, "FERRY_HOST_ID must come from the pod name (fieldRef metadata.name)")
    if env.get("FERRY_LOG_FORMAT", {}).get("value") != "json":
        problem(W, "FERRY_LOG_FORMAT must be json")
    if pod.get("enableServiceLinks") is not False:
        problem(W, "enableServiceLinks must be false (the Service `ferry` would inject FERRY_* variables)")

    # Probes and scraping.
    def probe(kind, path):
        p = c.get(kind) or {}
        get = p.get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("http", http_port):
            problem(W, f"{kind} must GET {path} on the http port")
        return p
    probe("readinessProbe", READY)
    probe("livenessProbe", LIVE)
    startup = probe("startupProbe", READY)
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < 300:
        problem(W, "startupProbe allows under 5 minutes: first starts compile every model")
    if pod_annotations.get("prometheus.io/scrape") != "true" \
            or pod_annotations.get("prometheus.io/path") != METRICS \
            or str(pod_annotations.get("prometheus.io/port")) != str(http_port):
        problem(W, f"pod annotations must have prometheus.io/scrape \"true\", path {METRICS}, port {http_port}")

    # Security.
    if pod.get("automountServiceAccountToken") is not False:
        problem(W, "automountServiceAccountToken must be false")
    if sa and pod.get("serviceAccountName") != sa["metadata"]["name"]:
        problem(W, f"serviceAccountName must be {sa['metadata']['name']!r}")
    want = {"runAsNonRoot": True, "runAsUser": 65532}
    for where_ctx, ctx in (("pod", pod.get("securityContext") or {}), ("container", c.get("securityContext") or {})):
        for k, v in want.items():
            if ctx.get(k) != v:
                problem(W, f"{where_ctx} securityContext.{k} must be {v}")
        if (ctx.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(W, f"{where_ctx} securityContext.seccompProfile must be RuntimeDefault")
    csc = c.get("securityContext") or {}
    if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False \
            or (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problem(W, "container must have readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL")
    docker_user = dockerfile_user()
    if docker_user is not None and docker_user != csc.get("runAsUser"):
        problem(W, f"runAsUser {csc.get('runAsUser')} is not the image's USER {docker_user}")

    # The config file, and the numbers the pod spec is sized from.
    resources = c.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if "cpu" not in requests:
        problem(W, "no cpu request: the HPA's utilisation target is relative to it")
    if "memory" not in limits:
        problem(W, "no memory limit")
    if config_text is not None:
        try:
            config = tomllib.loads(config_text)
        except tomllib.TOMLDecodeError as e:
            problem(f"deploy/kubernetes/{cm_file}", f"{config_key} is not TOML: {e}")
            config = None
        if config is not None:
            check_config(config, f"deploy/kubernetes/{cm_file}", W, pod, c, cache_volume, limits, requests)

    # Autoscaling and disruption.
    if hpa:
        H = f"deploy/kubernetes/{hpa_file}"
        target = hpa.get("spec", {}).get("scaleTargetRef", {})
        if target.get("kind") != "Deployment" or target.get("name") != dep["metadata"]["name"]:
            problem(H, f"scaleTargetRef must be Deployment/{dep['metadata']['name']}")
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
        if not lo <= spec.get("replicas", 1) <= hi:
            problem(W, f"replicas {spec.get('replicas')} is outside the HPA's {lo}..{hi}")
        window = hpa["spec"].get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds")
        if window is None:
            problem(H, "no scaleDown stabilizationWindowSeconds")
        if pdb and isinstance(pdb["spec"].get("maxUnavailable"), int) and pdb["spec"]["maxUnavailable"] >= lo:
            problem(f"deploy/kubernetes/{pdb_file}", f"maxUnavailable lets every one of the HPA's {lo} minimum go")
    if svc:
        S = f"deploy/kubernetes/{svc_file}"
        for p in svc.get("spec", {}).get("ports", []):
            if p.get("targetPort") not in ("http", http_port):
                problem(S, f"port {p.get('port')} targets {p.get('targetPort')!r}, not the container's http port")


def rust_struct_fields(file, struct):
    """{field: Rust type} of `pub struct STRUCT { pub field: Type, ... }` in the host's source."""
    try:
        source = (ROOT / file).read_text()
    except OSError:
        return None
    m = re.search(r"pub struct " + struct + r"\s*\{(.*?)\n\}", source, re.S)
    if not m:
        return None
    return dict(re.findall(r"^\s*pub (\w+):\s*([^,\n]+),", m.group(1), re.M))


def fits_rust_type(value, rust_type):
    rust_type = re.sub(r"^Option<(.*)>$", r"\1", rust_type.strip())
    if rust_type in ("u8", "u16", "u32", "u64", "usize"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if rust_type in ("i32", "i64", "isize"):
        return isinstance(value, int) and not isinstance(value, bool)
    if rust_type in ("f32", "f64"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if rust_type == "bool":
        return isinstance(value, bool)
    if rust_type in ("String", "PathBuf"):
        return isinstance(value, str)
    return True  # a type this check does not know: the host will say


def check_config_keys(config, C):
    """ferry.toml against the host's own configuration structs."""
    structs = {}
    for section, (file, struct) in CONFIG_STRUCTS.items():
        fields = rust_struct_fields(file, struct)
        if fields is None:
            problem(C, f"cannot find `pub struct {struct}` in {file} to check ferry.toml against "
                       f"(update CONFIG_STRUCTS in scripts/validate-deploy-checks.py)")
            return
        structs[section] = fields
    for section in config:
        if section not in structs[None]:
            problem(C, f"ferry.toml has a section [{section}] the host does not read "
                       f"(it reads {', '.join(sorted(structs[None]))})")
    tables = [(name, config.get(name, {}), structs[name]) for name in ("host", "store", "cache")]
    tables += [(f"models.{m}", t, structs["models.*"]) for m, t in (config.get("models") or {}).items()]
    for name, table, fields in tables:
        if not isinstance(table, dict):
            problem(C, f"ferry.toml's {name} is not a table")
            continue
        for key, value in table.items():
            if key not in fields:
                problem(C, f"ferry.toml's [{name}] has {key!r}, which the host does not know "
                           f"(it knows {', '.join(sorted(fields))})")
            elif not fits_rust_type(value, fields[key]):
                problem(C, f"ferry.toml's [{name}] {key} = {value!r} is not a {fields[key].strip()}")


def check_config(config, C, W, pod, c, cache_volume, limits, requests):
    check_config_keys(config, C)
    host = config.get("host", {})
    # One instance may not reach the container's memory limit: it would be the pod, not the call, that dies.
    try:
        memory_limit = quantity_bytes(limits.get("memory", "0"))
        if memory_limit and (host.get("max_memory_mib", 4096) << 20) >= memory_limit:
            problem(C, f"host.max_memory_mib {host.get('max_memory_mib', 4096)} is not below the container's "
                       f"memory limit {limits.get('memory')}")
        # The versions' memory budget leaves the host room under the same limit.
        budget = host.get("max_resident_bytes")
        if memory_limit and budget is None:
            problem(W, "ferry.toml sets no host.max_resident_bytes: versions may grow until the pod is OOM-killed")
        elif memory_limit and budget >= memory_limit:
            problem(C, f"host.max_resident_bytes {budget} is not below the container's memory limit "
                       f"{limits.get('memory')}")
    except ValueError as e:
        problem(W, str(e))
    # The cache, plus an upload being staged, fits in the emptyDir without the kubelet evicting the pod.
    if cache_volume is not None:
        size_limit = cache_volume["emptyDir"].get("sizeLimit")
        cache_bytes = config.get("cache", {}).get("max_bytes")
        if size_limit is None:
            problem(W, "the cache emptyDir has no sizeLimit")
        elif cache_bytes is None:
            problem(C, "ferry.toml sets no cache.max_bytes: the cache would grow until the pod is evicted")
        else:
            room = cache_bytes + host.get("max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES)
            if room > quantity_bytes(size_limit):
                problem(C, f"cache.max_bytes + host.max_upload_bytes = {room} bytes exceeds the cache emptyDir's "
                           f"sizeLimit {size_limit}")
            storage = requests.get("ephemeral-storage")
            if storage is None or quantity_bytes(storage) < quantity_bytes(size_limit):
                problem(W, f"requests.ephemeral-storage {storage} is below the cache sizeLimit {size_limit}")
    # preStop sleep + the longest request + a drain margin must end before the kubelet's SIGKILL.
    models = config.get("models", {}) or {"default": {}}
    longest_ms = max(m.get("queue_timeout_ms", DEFAULT_QUEUE_TIMEOUT_MS) + m.get("deadline_ms", DEFAULT_DEADLINE_MS)
                     for m in models.values())
    sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if sleep is None:
        problem(W, "no lifecycle.preStop.sleep (the image has no shell to sleep with)")
    elif sleep + longest_ms / 1000 + DRAIN_MARGIN_S >= grace:
        problem(W, f"preStop sleep {sleep}s + longest request {longest_ms / 1000}s + drain {DRAIN_MARGIN_S}s "
                   f"is not below terminationGracePeriodSeconds {grace}")


# --- Dockerfile ------------------------------------------------------------------------------------

def dockerfile_instructions():
    """[(line, INSTRUCTION, text)], continuations joined and comments dropped."""
    out, buf, start = [], "", None
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if start is None:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf, start = "", None
    return out


def final_stage():
    instructions = dockerfile_instructions()
    args = {}
    for _, word, rest in instructions:
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    starts = [i for i, (_, w, _) in enumerate(instructions) if w == "FROM"]
    if not starts:
        return args, []
    return args, instructions[starts[-1]:]


def dockerfile_user():
    if not DOCKERFILE.is_file():
        return None
    users = [rest for _, w, rest in final_stage()[1] if w == "USER"]
    if not users:
        return None
    uid = users[-1].split(":")[0]
    return int(uid) if uid.isdigit() else uid


def exec_form(text, where, what):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        problem(where, f"{what} must be in exec (JSON array) form, so ferry is PID 1 and gets SIGTERM")
        return None
    return value


def check_dockerfile():
    D = "deploy/Dockerfile"
    if not DOCKERFILE.is_file():
        problem(D, "is missing")
        return
    text = DOCKERFILE.read_text()
    if not text.startswith("# syntax=docker/dockerfile:"):
        problem(D, "must start with a `# syntax=docker/dockerfile:` line (BuildKit features are used)")
    if not re.search(r"cargo build --release --locked -p ferry\b", text):
        problem(D, "does not build with `cargo build --release --locked -p ferry`")
    args, stage = final_stage()
    if not stage:
        problem(D, "has no FROM")
        return
    image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
                   stage[0][2].split()[0])
    if not image.startswith("gcr.io/distroless/") or not image.endswith(":nonroot"):
        problem(D, f"final stage is {image!r}, not a distroless :nonroot image")
    final = {}
    for line, word, rest in stage:
        final.setdefault(word, []).append((line, rest))
    user = dockerfile_user()
    if not isinstance(user, int) or user == 0:
        problem(D, f"final stage USER must be a numeric non-root uid (runAsNonRoot verifies it), not {user!r}")
    entrypoint = exec_form(final.get("ENTRYPOINT", [(0, "")])[-1][1], D, "ENTRYPOINT")
    cmd = exec_form(final.get("CMD", [(0, "[]")])[-1][1], D, "CMD") or []
    if entrypoint is not None:
        copied = {shlex.split(rest)[-1] for _, rest in final.get("COPY", [])}
        if len(entrypoint) != 1 or entrypoint[0] not in copied or not entrypoint[0].endswith("/ferry"):
            problem(D, f"ENTRYPOINT {entrypoint} must be just the ferry binary copied into the final stage "
                       f"(the Deployment's args replace CMD)")
        flags = serve_flags(entrypoint[1:] + cmd, D)
        envs = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for _, rest in final.get("ENV", []))))
        if flags.get("--cache-dir") != envs.get("FERRY_CACHE_DIR"):
            problem(D, f"CMD's --cache-dir {flags.get('--cache-dir')!r} is not ENV FERRY_CACHE_DIR "
                       f"{envs.get('FERRY_CACHE_DIR')!r}")
        port = listen_port(flags.get("--listen"), D) if "--listen" in flags else None
        exposed = {p.split("/")[0] for _, rest in final.get("EXPOSE", []) for p in rest.split()}
        if port is not None and str(port) not in exposed:
            problem(D, f"--listen port {port} is not EXPOSEd ({sorted(exposed)})")


CHECKS = {"kustomization": check_kustomization, "manifests": check_manifests, "dockerfile": check_dockerfile}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(CHECKS)}")
    try:
        CHECKS[sys.argv[1]]()
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as e:
        problem(sys.argv[1], f"could not be checked: {type(e).__name__}: {e}")
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)
