"""Drives a running `ferry serve` with third-party tools, unmodified:

- NVIDIA's `tritonclient` (an Open Inference Protocol v2 HTTP client from PyPI): server/model
  metadata and readiness, then `infer` on digits-onnx with held-out images, once with JSON tensors
  and once with the binary tensor data extension; both must read the digits and agree.
- KServe's own `InferenceRESTClient` (the `kserve` package, protocol v2): server liveness and
  readiness (read from the OIP's `{"live": true}` / `{"ready": true}` bodies), model readiness, and
  `infer` on digits-onnx with JSON and with binary tensors.
- `prometheus_client`'s text-format parser on GET /metrics.

Usage: python oip_client_check.py HOST:PORT path/to/held-out.json
"""
import asyncio
import json
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families


def infer(client, images, binary):
    inp = httpclient.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer("digits-onnx", [inp], outputs=outputs, request_id="tritonclient-1")
    assert result.get_response()["id"] == "tritonclient-1", result.get_response()
    return result.as_numpy("probabilities"), result.as_numpy("label")


async def kserve_rest(url, images, digits):
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    base = f"http://{url}"
    try:
        assert await client.is_server_live(base) is True
        assert await client.is_server_ready(base) is True
        assert await client.is_model_ready(base, "digits-onnx") is True
        labels = {}
        for binary in (False, True):
            inp = InferInput("input", list(images.shape), "FP32")
            inp.set_data_from_numpy(images, binary_data=binary)
            request = InferRequest(model_name="digits-onnx", infer_inputs=[inp], request_id=f"kserve-{binary}")
            response = await client.infer(base, request, model_name="digits-onnx")
            outputs = {o.name: o.as_numpy() for o in response.outputs}
            assert outputs["probabilities"].shape == (len(digits), 10), outputs
            labels[binary] = outputs["label"]
        assert np.array_equal(labels[False], labels[True])
        right = int((labels[False] == digits).sum())
        assert right >= 9, right
        print(f"kserve InferenceRESTClient: live, ready, model ready; JSON and binary agree, {right}/{len(digits)} right")
    finally:
        await client.close()


def main():
    url, held_out_path = sys.argv[1], sys.argv[2]
    held = json.load(open(held_out_path))
    images = np.array(held["images"], dtype=np.float32)
    digits = np.array(held["digits"], dtype=np.int64)

    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-onnx")
    meta = client.get_model_metadata("digits-onnx")
    assert meta["inputs"][0]["shape"] == [-1, 64], meta
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"], server

    probs_json, labels_json = infer(client, images, binary=False)
    right = int((labels_json == digits).sum())
    print(f"tritonclient JSON: {right}/{len(digits)} held-out digits read correctly")
    probs_bin, labels_bin = infer(client, images, binary=True)
    assert probs_bin.shape == (len(digits), 10) and probs_bin.dtype == np.float32
    assert np.array_equal(labels_bin, labels_json) and np.allclose(probs_bin, probs_json, atol=1e-6)
    print("tritonclient binary: binary and JSON agree")
    assert right >= 9

    # What Triton's client asks besides the OIP core: the model's configuration and its statistics.
    config = client.get_model_config("digits-onnx")
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == [-1, 64], config
    stats = client.get_inference_statistics("digits-onnx")["model_stats"]
    assert stats and stats[0]["inference_count"] >= 2, stats  # the JSON and the binary request above
    assert stats[0]["inference_stats"]["success"]["ns"] > 0, stats
    print("tritonclient config and statistics: ok")

    asyncio.run(kserve_rest(url, images, digits))

    text = urllib.request.urlopen(f"http://{url}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ["ferry_requests", "ferry_request_duration_seconds", "ferry_queue_wait_seconds", "ferry_instances",
                 "ferry_model_load_seconds"]:
        assert name in families, (name, sorted(families))
    assert any(s.labels.get("model") == "digits-onnx" for s in families["ferry_requests"].samples)
    print("prometheus parser: ok")


if __name__ == "__main__":
    main()
