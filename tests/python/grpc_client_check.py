"""Drives a running `ferry serve` over gRPC with NVIDIA's `tritonclient.grpc` (PyPI), unmodified, on
the host's one HTTP port:

- health: ServerLive, ServerReady, ModelReady, and `grpc.health.v1.Health/Check`;
- metadata, model config and statistics;
- ModelInfer on digits-graph with raw contents (what tritonclient sends) and with typed `contents`
  (built with tritonclient's own protobuf messages): both read the digits and agree;
- every datatype's typed contents through the echo model, unchanged;
- a split alias (`canary`, 50/50 over two versions): every answer from one of its versions, both seen;
- a wrong shape (INVALID_ARGUMENT), an unknown model (NOT_FOUND), a missing token (UNAUTHENTICATED);
- ModelStreamInfer: answers in order, a bad request answered with its error while the stream goes on,
  after more hung-up streams than the byte budget has room for (what they held came back); open
  streams held to half of the byte budget (the next one UNAVAILABLE), unary calls answering;
- repository index, unload and load under the admin credential;
- the caller's `grpc-timeout` honoured by the server, through a raw HTTP/2 client that does not
  enforce it itself (h2).

KServe's gRPC client is driven by kserve_grpc_check.py: its generated protobuf modules and
tritonclient's define the same messages, which one Python process cannot load together.

Usage: python grpc_client_check.py HOST:PORT held-out.json INFERENCE_TOKEN ADMIN_TOKEN
"""
import json
import queue
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

url, held_out, inference_token, admin_token = sys.argv[1:5]
held = json.load(open(held_out))
images = np.array(held["images"], dtype=np.float32)
digits = np.array(held["digits"], dtype=np.int64)
cases = images
auth = {"authorization": f"Bearer {inference_token}"}
admin = {"authorization": f"Bearer {admin_token}"}

client = grpcclient.InferenceServerClient(url=url)


def expect_error(code, call):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == f"StatusCode.{code}", (code, e.status(), e.message())
        return e.message()
    raise AssertionError(f"expected {code}")


# Health, with and without the protocol's own service.
assert client.is_server_live()
assert client.is_server_ready()
assert client.is_model_ready("digits-graph", headers=auth)
channel = grpc.insecure_channel(url)
check = channel.unary_unary("/grpc.health.v1.Health/Check")
assert check(b"") == b"\x08\x01", "SERVING"  # HealthCheckResponse{status: SERVING}
assert check(b"\n\x1einference.GRPCInferenceService") == b"\x08\x01"
try:
    check(b"\n\x07nothing")
    raise AssertionError("an unknown service is NOT_FOUND")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e
print("grpc health: live, ready, model ready, grpc.health.v1 serving")

# Metadata, configuration, and the token rules.
meta = client.get_server_metadata()
assert meta.name == "ferry", meta
model = client.get_model_metadata("digits-graph", headers=auth)
assert [i.name for i in model.inputs] == ["input"], model
assert model.inputs[0].datatype == "FP32"
message = expect_error("UNAUTHENTICATED", lambda: client.get_model_metadata("digits-graph"))
assert "token" in message, message
config = client.get_model_config("digits-graph", headers=auth).config
assert config.name == "digits-graph" and config.input[0].name == "input", config
assert model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_FP32", config
print("grpc metadata and config: ok")


def infer_raw(model_name, headers=auth):
    inp = grpcclient.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    outputs = [grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")]
    return client.infer(model_name, [inp], outputs=outputs, request_id="grpc-raw", headers=headers)


raw = infer_raw("digits-graph")
assert raw.get_response().id == "grpc-raw"
labels = raw.as_numpy("label")
assert raw.as_numpy("probabilities").shape == (len(cases), 10)
right = int((labels == digits).sum())
assert right >= 9, (right, labels, digits)

# Typed contents: the protocol's other way, built with tritonclient's own messages.
stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
request = service_pb2.ModelInferRequest(model_name="digits-graph", id="grpc-typed")
tensor = request.inputs.add(name="input", datatype="FP32", shape=list(images.shape))
tensor.contents.fp32_contents.extend(images.flatten().tolist())
typed = stub.ModelInfer(request, metadata=list(auth.items()))
assert not typed.raw_output_contents, "typed in, typed out"
by_name = {o.name: o for o in typed.outputs}
typed_labels = np.array(by_name["label"].contents.int64_contents or by_name["label"].contents.int_contents)
assert np.array_equal(typed_labels, labels.flatten()), (typed_labels, labels)
print(f"grpc infer: raw {right}/{len(cases)} right; typed contents agree with raw")

# Every datatype's typed contents through the echo model, unchanged.
request = service_pb2.ModelInferRequest(model_name="echo")
values = {
    "bool": ("BOOL", "bool_contents", [True, False, True]),
    "uint8": ("UINT8", "uint_contents", [0, 200, 255]),
    "uint16": ("UINT16", "uint_contents", [0, 60000, 7]),
    "uint32": ("UINT32", "uint_contents", [0, 4000000000, 9]),
    "uint64": ("UINT64", "uint64_contents", [0, 18000000000000000000, 1]),
    "int8": ("INT8", "int_contents", [-128, 0, 127]),
    "int16": ("INT16", "int_contents", [-32768, 5, 32767]),
    "int32": ("INT32", "int_contents", [-2147483648, 0, 2147483647]),
    "int64": ("INT64", "int64_contents", [-(2**63), 0, 2**63 - 1]),
    "fp32": ("FP32", "fp32_contents", [1.5, -0.25, 2.0**127]),
    "fp64": ("FP64", "fp64_contents", [1e-300, -2.5, 1e300]),
    "bytes": ("BYTES", "bytes_contents", [b"a", b"", b"\x00\xff"]),
}
for name, (datatype, field, data) in values.items():
    t = request.inputs.add(name=name, datatype=datatype, shape=[3])
    getattr(t.contents, field).extend(data)
echoed = stub.ModelInfer(request, metadata=list(auth.items()))
for out in echoed.outputs:
    datatype, field, data = values[out.name]
    assert out.datatype == datatype and list(out.shape) == [3], out
    got = list(getattr(out.contents, field))
    assert got == data, (out.name, got, data)
assert len(echoed.outputs) == 12
# One out-of-range element is refused, naming the input.
bad = service_pb2.ModelInferRequest()
bad.CopyFrom(request)
bad.inputs[5].contents.int_contents[0] = 128
try:
    stub.ModelInfer(bad, metadata=list(auth.items()))
    raise AssertionError("INT8 128 is out of range")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "int8" in e.details(), e
print("grpc typed contents: every datatype echoed unchanged")

# A split alias: every answer from one of its versions, both seen.
seen = set()
for i in range(40):
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(images[:1])
    r = client.infer("digits-graph", [inp], model_version="canary", headers=auth)
    seen.add(r.get_response().model_version)
assert seen == {"1", "2"}, seen
print(f"grpc split alias: versions {sorted(seen)}")

# Errors: the REST messages under the gRPC codes.
wrong = grpcclient.InferInput("input", [1, 63], "FP32")
wrong.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
message = expect_error("INVALID_ARGUMENT", lambda: client.infer("digits-graph", [wrong], headers=auth))
assert "input" in message and "63" in message, message
message = expect_error("NOT_FOUND", lambda: client.infer("no-such-model", [wrong], headers=auth))
assert message == "unknown model `no-such-model`", message
expect_error("UNAUTHENTICATED", lambda: infer_raw("digits-graph", headers={}))
# A message over the host's body limit (2 MiB here) is refused before it is decoded.
huge = grpcclient.InferInput("input", [12000, 64], "FP32")
huge.set_data_from_numpy(np.zeros((12000, 64), dtype=np.float32))
message = expect_error("RESOURCE_EXHAUSTED", lambda: client.infer("digits-graph", [huge], headers=auth))
assert "larger than the limit" in message, message
# Without the token, refused before its message is read.
expect_error("UNAUTHENTICATED", lambda: client.infer("digits-graph", [huge]))
print("grpc errors: wrong shape INVALID_ARGUMENT, unknown model NOT_FOUND, no token UNAUTHENTICATED, "
      "too large RESOURCE_EXHAUSTED")

# Statistics count what was served.
stats = client.get_inference_statistics("digits-graph", headers=auth)
counted = sum(s.inference_count for s in stats.model_stats)
assert counted >= 42, stats
print(f"grpc statistics: {counted} inferences")

# Callers that hang up mid-stream give back what their streams held: more rounds than the host's
# byte budget (16 MiB here, 2 MiB an open stream) has room for, then the stream below still answers.
for round in range(12):
    client.start_stream(callback=lambda result, error: None, headers=auth)
    for i in range(3):
        inp = grpcclient.InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(images[:1])
        client.async_stream_infer("digits-graph", [inp], request_id=f"gone-{round}-{i}")
    client.stop_stream(cancel_requests=True)

# Streaming: in order; a bad request answered with its error, and the stream goes on.
answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=auth)
for i in range(6):
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(images[i : i + 1])
    client.async_stream_infer("digits-graph", [inp], request_id=f"s{i}")
    if i == 2:
        client.async_stream_infer("digits-graph", [wrong], request_id="bad")
client.stop_stream()
got = [answers.get(timeout=30) for _ in range(7)]
ids = []
for result, error in got:
    if error is not None:
        ids.append("bad")
        assert "63" in str(error), error
    else:
        ids.append(result.get_response().id)
        digit = int(result.as_numpy("label").flatten()[0])
        assert 0 <= digit <= 9
assert ids == ["s0", "s1", "s2", "bad", "s3", "s4", "s5"], ids
print("grpc stream: 6 answers in order, the bad request answered with its error")


# Open streams hold at most half of the byte budget (8 of the 16 MiB here, 2 MiB a stream): a fifth
# open stream is refused UNAVAILABLE (with retry-after), unary calls answer meanwhile, and an ended stream's room
# comes back.
def open_stream():
    requests = queue.Queue()

    def messages():
        while (message := requests.get()) is not None:
            yield message

    return requests, stub.ModelStreamInfer(messages(), metadata=list(auth.items()))


def one_image(i):
    message = service_pb2.ModelInferRequest(model_name="digits-graph", id=f"open-{i}")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(images[i % len(images)].tolist())
    return message


def answered(stream, i):
    requests, call = stream
    requests.put(one_image(i))
    answer = next(call)
    assert not answer.error_message and answer.infer_response.id == f"open-{i}", answer


open_streams, refused = [], None
for i in range(6):
    stream = open_stream()
    try:
        answered(stream, i)
        open_streams.append(stream)
    except grpc.RpcError as e:
        stream[0].put(None)
        refused = e
        break
assert len(open_streams) == 4 and refused is not None, (len(open_streams), refused)
assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
assert dict(refused.trailing_metadata()).get("retry-after") == "1", refused.trailing_metadata()
assert "too many open streams" in refused.details(), refused.details()
assert infer_raw("digits-graph").as_numpy("label").shape[0] == len(cases)
requests, call = open_streams.pop()
requests.put(None)
assert list(call) == []
again = open_stream()
answered(again, 9)
for requests, call in open_streams + [again]:
    requests.put(None)
    assert list(call) == []
print("grpc streams: 4 open hold half of the byte budget, a fifth UNAVAILABLE, unary calls answer meanwhile")

# The model repository, under the admin credential.
index = client.get_model_repository_index(headers=admin)
names = {(m.name, m.version, m.state) for m in index.models}
assert ("digits-graph", "1", "READY") in names, names
expect_error("UNAUTHENTICATED", lambda: client.get_model_repository_index())
client.unload_model("echo", headers=admin)
assert not client.is_model_ready("echo", headers=auth)
client.load_model("echo", headers=admin)
assert client.is_model_ready("echo", headers=auth)
print("grpc repository: index, unload, load")
client.close()

# The caller's grpc-timeout, honoured by the server itself: a raw HTTP/2 client (h2) that sends the
# header and never cancels, as a proxy relaying a deadline does. 1 ns is over before the message is
# read, so the server answers DEADLINE_EXCEEDED naming the caller's deadline; a malformed value is
# INVALID_ARGUMENT; without the header the same request answers.
import socket  # noqa: E402
import time  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402


def raw_call(method, timeout, end_stream=True):
    """One call of `method` carrying one digits message, sent with `timeout` as grpc-timeout (None: none)
    and the request stream left open unless `end_stream`: (grpc-status, grpc-message, answers, seconds)."""
    host, port = url.rsplit(":", 1)
    message = service_pb2.ModelInferRequest(model_name="digits-graph")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(images[0].tolist())
    payload = message.SerializeToString()
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", url),
               (":path", f"/inference.GRPCInferenceService/{method}"), ("content-type", "application/grpc"),
               ("te", "trailers"), ("authorization", f"Bearer {inference_token}")]
    if timeout is not None:
        headers.append(("grpc-timeout", timeout))
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, headers)
        conn.send_data(1, b"\x00" + len(payload).to_bytes(4, "big") + payload, end_stream=end_stream)
        sock.sendall(conn.data_to_send())
        status, body = {}, b""
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    status.update({k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                                   for k, v in event.headers})
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if isinstance(event, h2.events.StreamEnded):
                    answers = 0  # gRPC messages: a flag byte and a 4-byte length before each
                    while body:
                        body = body[5 + int.from_bytes(body[1:5], "big"):]
                        answers += 1
                    return status.get("grpc-status"), status.get("grpc-message", ""), answers, time.monotonic() - started
            sock.sendall(conn.data_to_send())


def raw_infer(timeout):
    """(grpc-status, grpc-message) of one ModelInfer sent with `timeout` as grpc-timeout (None: none)."""
    return raw_call("ModelInfer", timeout)[:2]


code, text = raw_infer(None)
assert code == "0", (code, text)
code, text = raw_infer("1n")
assert code == "4", (code, text)  # DEADLINE_EXCEEDED
assert "grpc-timeout" in text, text
code, text = raw_infer("soon")
assert code == "3", (code, text)  # INVALID_ARGUMENT
assert "one%20to%20eight%20digits" in text or "one to eight digits" in text, text
print("grpc-timeout: honoured by the server (1n: DEADLINE_EXCEEDED), a malformed one INVALID_ARGUMENT")

# On a stream, the caller's deadline bounds the whole stream: a message answered, then, with the
# request side left open, the stream ended DEADLINE_EXCEEDED at the deadline (1 s), not at the host's
# own limits (30 s idle, 60 s a request).
code, text, answers, took = raw_call("ModelStreamInfer", "1S", end_stream=False)
assert (code, answers) == ("4", 1), (code, text, answers)
assert "grpc-timeout" in text, text
assert 0.9 <= took < 10, took
print(f"grpc-timeout on a stream: the answer, then DEADLINE_EXCEEDED after {took:.1f} s")
