"""Host-side graphs: the ONNX graphs pushed with the version (``ferry push --graph NAME=FILE.onnx``), run
natively by the host (ONNX Runtime or tract) and called here like a function, with plain lists::

    from ferry_sdk.graph import Graph

    class LateRide(Model):
        def init(self, config, weights):
            self.graph = Graph("model")

        def predict(self, request):
            x = ride_features(...)                              # a list of floats
            p = self.graph.run(input=[x])["probabilities"][0]   # rows in, rows out
            return {"p_late": p[1]}

Inputs are nested lists (their shape is read from the nesting; FP32 unless ``tensor(...)`` says
otherwise); outputs come back as nested lists of the graph's output shapes. The graph's weights never
enter the model: the host loads each graph once per version. This is the standard ``wasi:nn`` interface
(``load-by-name``); a model that uses it needs ``graphs = true`` under ``[tool.ferry]`` in
``pyproject.toml``.
"""

from __future__ import annotations

import struct
from typing import Any

try:
    from componentize_py_types import Err
    from wit_world.imports import graph as _nn
    from wit_world.imports import tensor as _tensor
except ImportError:  # pragma: no cover - depends on the world the model was built with
    raise ImportError(
        "ferry_sdk.graph needs the wasi:nn world: add `graphs = true` under [tool.ferry] in "
        "pyproject.toml and build again"
    ) from None

__all__ = ["Graph", "GraphError", "tensor"]

# datatype → (wasi:nn type, struct code)
_TYPES = {
    "FP32": (_tensor.TensorType.FP32, "f"),
    "FP64": (_tensor.TensorType.FP64, "d"),
    "UINT8": (_tensor.TensorType.U8, "B"),
    "INT32": (_tensor.TensorType.I32, "i"),
    "INT64": (_tensor.TensorType.I64, "q"),
}
_CODES = {ty: code for ty, code in _TYPES.values()}


class GraphError(Exception):
    """A graph could not be opened or run. The message has wasi:nn's error code; the host adds the
    backend's own words to the caller's error when the model lets this propagate."""


class _Input:
    def __init__(self, values: Any, datatype: str, shape: list[int] | None):
        if datatype not in _TYPES:
            raise ValueError(f"datatype {datatype!r}: graphs take {', '.join(_TYPES)}")
        self.datatype = datatype
        self.flat, inferred = _flatten(values)
        self.shape = list(shape) if shape is not None else inferred
        count = 1
        for d in self.shape:
            count *= d
        if count != len(self.flat):
            raise ValueError(f"shape {self.shape} holds {count} elements, {len(self.flat)} were given")


def tensor(values: Any, datatype: str = "FP32", shape: list[int] | None = None) -> _Input:
    """An input of another datatype than FP32 (``"FP64"``, ``"UINT8"``, ``"INT32"``, ``"INT64"``), or
    with an explicit shape for flat ``values``."""
    return _Input(values, datatype, shape)


def _flatten(values: Any) -> tuple[list, list[int]]:
    if not isinstance(values, (list, tuple)):
        return [values], []
    shape = [len(values)]
    if values and isinstance(values[0], (list, tuple)):
        flat: list = []
        inner: list[int] | None = None
        for row in values:
            row_flat, row_shape = _flatten(row)
            if inner is None:
                inner = row_shape
            elif row_shape != inner:
                raise ValueError(f"rows of different shapes: {inner} and {row_shape}")
            flat.extend(row_flat)
        return flat, shape + (inner or [])
    return list(values), shape


def _nest(flat: list, shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat if shape else flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


class Graph:
    """A graph of the version, by name (the NAME of ``--graph NAME=FILE.onnx``). Opened on its first
    run, so nothing of the host's is held while the model loads (the host snapshots the loaded model)."""

    def __init__(self, name: str):
        self.name = name
        self._graph = None
        self._context = None

    def run(self, inputs: dict[str, Any] | None = None, /, **named: Any) -> dict[str, Any]:
        """Runs the graph: inputs by name (``run(input=[[...]])`` or ``run({"input": [[...]]})``),
        outputs by name as nested lists."""
        given = dict(inputs or {}, **named)
        if self._context is None:
            try:
                self._graph = _nn.load_by_name(self.name)
                self._context = self._graph.init_execution_context()
            except Err as e:
                raise GraphError(f"opening graph {self.name!r}: {_message(e)}") from None
        pairs = []
        for name, value in given.items():
            value = value if isinstance(value, _Input) else _Input(value, "FP32", None)
            ty, code = _TYPES[value.datatype]
            try:
                data = struct.pack(f"<{len(value.flat)}{code}", *value.flat)
            except (struct.error, OverflowError) as e:
                raise ValueError(f"input {name!r}: an element is not a {value.datatype} value ({e})") from None
            pairs.append((name, _tensor.Tensor(value.shape, ty, data)))
        try:
            outputs = self._context.compute(pairs)
        except Err as e:
            raise GraphError(f"running graph {self.name!r}: {_message(e)}") from None
        answer = {}
        for name, t in outputs:
            code = _CODES.get(t.ty())
            if code is None:
                raise GraphError(f"graph {self.name!r}: output {name!r} is {t.ty()}, which this SDK does not read")
            data = t.data()
            flat = list(struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data))
            answer[name] = _nest(flat, list(t.dimensions()))
        return answer


def _message(e: Err) -> str:
    error = e.value
    try:
        return f"{error.code().name}: {error.data()}"
    except Exception:  # the error resource could not be read
        return repr(error)
