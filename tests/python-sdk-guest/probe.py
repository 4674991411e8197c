"""Exercises ferry_sdk from inside a component; tests/e2e/python_sdk.rs drives it.

`infer` scales input "x" by the configured factor and echoes any other tensor unchanged (the datatype
round trip); `predict` does what the request's "do" says.
"""
from ferry_sdk import Metadata, Model, SelfTests, Tensor, TensorSpec, log
from units import miles


class SdkProbe(Model):
    def init(self, config, weights):
        if config.get("fail_init"):
            raise RuntimeError("init asked to fail")
        self.scale = config.get("scale", 2.0)

    def metadata(self):
        return Metadata(
            "probe",
            description="exercises ferry_sdk",
            inputs=[TensorSpec("x", "FP32", [-1, 2])],
            outputs=[TensorSpec("y", "FP32", [-1, 2])],
        )

    def infer(self, inputs):
        if "overflow" in inputs:
            return [Tensor("o", "UINT8", [1], [300])]
        if "fraction" in inputs:
            return [Tensor("i", "INT32", [1], [1.5])]
        if "strings" in inputs:
            return [Tensor("s", "BYTES", [2], ["héllo", b"\xff"])]
        if "x" in inputs:
            rows = inputs.matrix("x", 2)
            return [Tensor.fp32("y", [len(rows), 2], [v * self.scale for row in rows for v in row])]
        return [Tensor(t.name, t.datatype, t.shape, t.data) for t in inputs.values()]

    def predict(self, request):
        action = request.get("do")
        if action == "fields":
            f = request.fields("features", a=float, n=int)
            return {"sum": f.a + f.n}
        if action == "raise-long":
            raise ValueError("x" * 200_000)
        if action == "raise":
            return {"value": {}["missing"]}
        if action == "late-import":
            import decimal  # noqa: F401 — not bundled: nothing imported it at build time

            return {}
        if action == "log":
            log.info("hello from python")
            return {"logged": True}
        if action == "bundled":
            return {"miles": miles(request.fields(distance_km=float).distance_km)}
        if action == "nan":
            return {"x": float("nan")}
        return {"echo": request}

    def self_tests(self):
        return (
            SelfTests()
            .predict("fields", {"do": "fields", "features": {"a": 1.5, "n": 2}}, {"sum": 3.5})
            .infer("scale", [Tensor.fp32("x", [1, 2], [1.0, -2.0])], [Tensor.fp32("y", [1, 2], [2.0, -4.0])])
        )
