"""ferry_sdk: write a Ferry model in Python.

A model is a subclass of :class:`Model`. Ferry builds it into a WebAssembly component with
componentize-py (``ferry build``) and runs it under the version's limits, with no filesystem and no
network::

    import json
    from ferry_sdk import Model, Metadata

    class Doubler(Model):
        def init(self, config, weights):
            self.factor = json.loads(weights)["factor"]

        def predict(self, request):
            x = request.fields("features", x=float).x
            return {"y": self.factor * x}

Import everything your model needs at the top of its module: the component is a snapshot taken after
the module was imported, and at run time there is no filesystem to import anything else from.

This package is plain Python: the same model file imports and runs in ordinary CPython (for a training
script or a unit test); only the component entry point, :mod:`ferry_sdk._component`, needs the
generated bindings.
"""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "DATATYPES",
    "Inputs",
    "InvalidInput",
    "Metadata",
    "Model",
    "ModelError",
    "Request",
    "SelfTests",
    "Tensor",
    "TensorSpec",
    "Unsupported",
    "json_weights",
    "log",
]

# --------------------------------------------------------------------------------------------- errors


class ModelError(Exception):
    """Base of the errors a model raises on purpose; anything else is reported as an internal error."""


class InvalidInput(ModelError):
    """The request is wrong (a missing feature, a bad value): the caller gets 422 with this message."""


class Unsupported(ModelError):
    """The model does not offer what was asked (e.g. tensor ``infer`` on a JSON-only model): 400."""


# -------------------------------------------------------------------------------------------- tensors

#: Open Inference Protocol datatypes the contract carries (FP16 is not).
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
    "INT8", "INT16", "INT32", "INT64", "FP32", "FP64", "BYTES",
)


def _check_datatype(datatype: str) -> str:
    if datatype not in DATATYPES:
        raise ValueError(f"unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")
    return datatype


def _product(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class Tensor:
    """A named tensor: ``datatype``, ``shape`` (batch first) and ``data``, a flat row-major list
    (``bytes`` values for BYTES). The element count must equal the product of the shape."""

    __slots__ = ("name", "datatype", "shape", "data")

    def __init__(self, name: str, datatype: str, shape: Sequence[int], data: Sequence[Any]):
        self.name = name
        self.datatype = _check_datatype(datatype)
        self.shape = [int(d) for d in shape]
        if any(d < 0 for d in self.shape):
            raise ValueError(f"tensor {name!r}: shape {self.shape} has a negative dimension")
        self.data = list(data)
        if len(self.data) != _product(self.shape):
            raise ValueError(
                f"tensor {name!r}: shape {self.shape} holds {_product(self.shape)} elements, data has {len(self.data)}"
            )

    @classmethod
    def fp32(cls, name: str, shape: Sequence[int], data: Sequence[float]) -> "Tensor":
        """An FP32 tensor."""
        return cls(name, "FP32", shape, data)

    @classmethod
    def fp64(cls, name: str, shape: Sequence[int], data: Sequence[float]) -> "Tensor":
        """An FP64 tensor."""
        return cls(name, "FP64", shape, data)

    @classmethod
    def int32(cls, name: str, shape: Sequence[int], data: Sequence[int]) -> "Tensor":
        """An INT32 tensor."""
        return cls(name, "INT32", shape, data)

    @classmethod
    def int64(cls, name: str, shape: Sequence[int], data: Sequence[int]) -> "Tensor":
        """An INT64 tensor."""
        return cls(name, "INT64", shape, data)

    @classmethod
    def bool(cls, name: str, shape: Sequence[int], data: Sequence[bool]) -> "Tensor":
        """A BOOL tensor."""
        return cls(name, "BOOL", shape, data)

    @classmethod
    def bytes(cls, name: str, shape: Sequence[int], data: Sequence[bytes]) -> "Tensor":
        """A BYTES tensor (each element a ``bytes`` value)."""
        return cls(name, "BYTES", shape, data)

    def rows(self) -> list[list[Any]]:
        """The tensor as a list of rows: ``shape[0]`` rows of ``product(shape[1:])`` elements."""
        if not self.shape:
            raise ValueError(f"tensor {self.name!r} is a scalar and has no rows")
        width = _product(self.shape[1:])
        return [self.data[i * width:(i + 1) * width] for i in range(self.shape[0])]

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.datatype}, {self.shape})"


class TensorSpec:
    """A declared input or output: ``-1`` in ``shape`` accepts any size in that dimension."""

    __slots__ = ("name", "datatype", "shape")

    def __init__(self, name: str, datatype: str, shape: Sequence[int]):
        self.name = name
        self.datatype = _check_datatype(datatype)
        self.shape = [int(d) for d in shape]

    def __repr__(self) -> str:
        return f"TensorSpec({self.name!r}, {self.datatype}, {self.shape})"


class Inputs(Mapping[str, Tensor]):
    """A request's tensors by name, and its ``parameters`` (a dict). Looking up an input the request
    lacks raises :class:`InvalidInput` naming it."""

    def __init__(self, tensors: Iterable[Tensor], parameters: dict | None = None):
        self._tensors = {t.name: t for t in tensors}
        self.parameters = parameters or {}

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise InvalidInput(f"missing input {name!r} (got {', '.join(self._tensors) or 'none'})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def get(self, name: str, default: Tensor | None = None) -> Tensor | None:
        return self._tensors.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def matrix(self, name: str, cols: int, datatypes: Sequence[str] = ("FP32", "FP64")) -> list[list[float]]:
        """Input ``name`` as rows of exactly ``cols`` numbers, checking its datatype and shape."""
        t = self[name]
        if t.datatype not in datatypes:
            raise InvalidInput(f"input {name!r}: datatype {t.datatype}, expected {' or '.join(datatypes)}")
        if len(t.shape) != 2 or t.shape[1] != cols:
            raise InvalidInput(f"input {name!r}: shape {t.shape}, expected [N, {cols}]")
        return t.rows()


# -------------------------------------------------------------------------------- requests, metadata


def _as(kind: type, value: Any) -> Any:
    # JSON has one number type; bool is an int in Python, never a number in a request.
    if isinstance(value, bool) and kind in (int, float):
        raise TypeError
    if kind is float:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError
        return float(value)
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise TypeError
        return value
    if kind in (str, bool, list, dict):
        if not isinstance(value, kind):
            raise TypeError
        return value
    return kind(value)


_JSON_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false",
               list: "an array", dict: "an object"}


class Request(dict):
    """A feature-style request: the JSON object the caller sent, as a ``dict``."""

    def fields(self, key: str | None = None, /, **types: type | Callable[[Any], Any]) -> SimpleNamespace:
        """Reads named fields, each converted to its type, from ``self[key]`` (or the request itself).

        ``request.fields("features", distance_km=float, hour=int)`` returns an object with
        ``.distance_km`` and ``.hour``; a missing field or a value of the wrong kind raises
        :class:`InvalidInput` naming it, so the caller gets a 422 that says what to fix.
        """
        where = key or "request"
        obj = self if key is None else self.get(key)
        if not isinstance(obj, dict):
            raise InvalidInput(f"{where}: expected a JSON object, got {json.dumps(obj)}")
        out = {}
        for name, kind in types.items():
            if name not in obj:
                raise InvalidInput(f"{where}.{name}: missing")
            try:
                out[name] = _as(kind, obj[name])
            except (TypeError, ValueError, ArithmeticError):
                expected = _JSON_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
                raise InvalidInput(f"{where}.{name}: expected {expected}, got {json.dumps(obj[name])}") from None
        return SimpleNamespace(**out)


class Metadata:
    """What a model declares: its platform (e.g. ``"linear-regression"``), a description, and its
    tensor inputs and outputs (the host checks tensor requests against them before calling ``infer``).
    ``predicts_json`` defaults to whether the model class defines ``predict``."""

    def __init__(
        self,
        platform: str = "python",
        *,
        description: str = "",
        inputs: Sequence[TensorSpec] = (),
        outputs: Sequence[TensorSpec] = (),
        predicts_json: bool | None = None,
    ):
        self.platform = platform
        self.description = description
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.predicts_json = predicts_json


# -------------------------------------------------------------------------------------- self-tests


class SelfTests:
    """Self-tests compiled into the component, run by the host on every load; a failing case keeps the
    version from serving. Cases whose expectations depend on retrained weights belong in the tests file
    the training script writes beside the weights (``--tests``), not here."""

    def __init__(self) -> None:
        #: ``(entry point, name, input, expected, tolerance)``, entry point ``"predict"`` or ``"infer"``.
        self.cases: list[tuple[str, str, Any, Any, float]] = []
        self.documents: list[str] = []

    def predict(self, name: str, request: Any, expected: Any, tolerance: float = 1e-9) -> "SelfTests":
        """The model's ``predict`` must answer ``request`` with ``expected`` (numbers within ``tolerance``)."""
        self.cases.append(("predict", name, request, expected, float(tolerance)))
        return self

    def infer(self, name: str, inputs: Sequence[Tensor], expected: Sequence[Tensor],
              tolerance: float = 1e-6) -> "SelfTests":
        """The model's ``infer`` must answer ``inputs`` with ``expected`` tensors."""
        self.cases.append(("infer", name, list(inputs), list(expected), float(tolerance)))
        return self

    def document(self, tests: str | dict) -> "SelfTests":
        """A whole tests document (the tests-file format, as text or a dict)."""
        self.documents.append(tests if isinstance(tests, str) else json.dumps(tests))
        return self


# ------------------------------------------------------------------------------------------- model


def json_weights(weights: bytes | None) -> Any:
    """The version's weights parsed as JSON, with an error that says what is missing or wrong."""
    if weights is None:
        raise ValueError("this model loads its weights from the version's weights file, and the version has "
                         "none: pass --weights FILE to `ferry test` / `ferry push`")
    try:
        return json.loads(weights)
    except ValueError as e:
        raise ValueError(f"the weights file is not JSON: {e}") from None


class Model:
    """Subclass this. Override ``init`` and at least one of ``predict`` / ``infer``.

    The host creates the model once per warm instance and reuses it for many requests, so do the
    expensive work (parsing weights) in ``init``; ``predict`` and ``infer`` must not change state that
    the next request would see.
    """

    def init(self, config: dict, weights: bytes | None) -> None:
        """Called once per instance: ``config`` is the version's config (``{}`` without one),
        ``weights`` its weights blob (``None`` without one)."""

    def metadata(self) -> Metadata:
        """What the model takes and returns."""
        return Metadata()

    def predict(self, request: Request) -> Any:
        """Feature-style prediction: the caller's JSON object in, any JSON-serialisable value out."""
        raise Unsupported("this model answers tensor `infer` requests, not feature-style `predict`")

    def infer(self, inputs: Inputs) -> list[Tensor]:
        """Tensor inference (Open Inference Protocol): the request's tensors in, output tensors out."""
        raise Unsupported("this model answers feature-style `predict` requests, not tensor `infer`")

    def self_tests(self) -> SelfTests:
        """Self-tests compiled into the component (none by default)."""
        return SelfTests()


# --------------------------------------------------------------------------------------------- log


class _Log:
    """Writes to the host's log (capped per call); outside a component, to stderr."""

    def __init__(self) -> None:
        self._sink: Callable[[str, str], None] = lambda level, message: print(f"[{level}] {message}", file=sys.stderr)

    def debug(self, message: str) -> None:
        self._sink("debug", message)

    def info(self, message: str) -> None:
        self._sink("info", message)

    def warn(self, message: str) -> None:
        self._sink("warn", message)

    def error(self, message: str) -> None:
        self._sink("error", message)


#: ``log.info("...")`` and friends.
log = _Log()
