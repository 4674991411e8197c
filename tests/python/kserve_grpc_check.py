"""Drives a running `ferry serve` over gRPC with KServe's own `InferenceGRPCClient` (the `kserve`
package, grpc.aio), unmodified, on the host's one HTTP port: server liveness and readiness, model
readiness, `infer` on digits-graph with raw contents (what it sends for numpy data) and with typed
contents (both must read the held-out digits and agree), and an unknown model answered NOT_FOUND.

A process of its own: kserve's generated protobuf modules and tritonclient's (grpc_client_check.py)
define the same `inference.*` messages, and one protobuf descriptor pool cannot hold both.

Usage: python kserve_grpc_check.py HOST:PORT held-out.json INFERENCE_TOKEN
"""
import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest


async def main(url, images, digits, token):
    headers = (("authorization", f"Bearer {token}"),)
    async with InferenceGRPCClient(url=url, timeout=30) as client:
        assert await client.is_server_live() is True
        assert await client.is_server_ready() is True
        assert await client.is_model_ready("digits-graph", headers=headers) is True
        labels = {}
        for binary in (True, False):
            inp = InferInput("input", list(images.shape), "FP32")
            inp.set_data_from_numpy(images, binary_data=binary)
            request = InferRequest(model_name="digits-graph", infer_inputs=[inp], request_id=f"kserve-grpc-{binary}")
            response = await client.infer(request, headers=headers)
            assert response.id == f"kserve-grpc-{binary}", response.id
            outputs = {o.name: o.as_numpy() for o in response.outputs}
            assert outputs["probabilities"].shape == (len(digits), 10), outputs
            labels[binary] = outputs["label"].flatten()
        assert np.array_equal(labels[True], labels[False]), labels
        right = int((labels[True] == digits).sum())
        assert right >= 9, (right, labels[True], digits)

        inp = InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(images[:1], binary_data=True)
        try:
            await client.infer(InferRequest(model_name="nothing", infer_inputs=[inp]), headers=headers)
            raise AssertionError("an unknown model is NOT_FOUND")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
        try:
            await client.is_model_ready("digits-graph")
            raise AssertionError("no token is UNAUTHENTICATED")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    print(f"kserve InferenceGRPCClient: live, ready, model ready; raw and typed contents agree, {right}/{len(digits)} right; "
          "unknown model NOT_FOUND, no token UNAUTHENTICATED")


if __name__ == "__main__":
    url, held_out, token = sys.argv[1:4]
    held = json.load(open(held_out))
    asyncio.run(main(url, np.array(held["images"], dtype=np.float32), np.array(held["digits"], dtype=np.int64), token))
