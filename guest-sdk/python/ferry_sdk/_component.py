"""The component side of the SDK: adapts a :class:`ferry_sdk.Model` subclass to the ``ferry:model``
world's generated bindings. ``ferry build`` generates the entry module that calls :func:`component`;
model authors never import this.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log as wit_log
from wit_world.imports import types as wit

import ferry_sdk as sdk

# componentize-py builds a fresh export object for every call, so the author's model lives here: one
# per instance, built by `init`.
_model: sdk.Model | None = None

_LEVELS = {"debug": wit_log.Level.DEBUG, "info": wit_log.Level.INFO, "warn": wit_log.Level.WARN,
           "error": wit_log.Level.ERROR}

_DATA = {
    "BOOL": wit.TensorData_Bool, "UINT8": wit.TensorData_Uint8, "UINT16": wit.TensorData_Uint16,
    "UINT32": wit.TensorData_Uint32, "UINT64": wit.TensorData_Uint64, "INT8": wit.TensorData_Int8,
    "INT16": wit.TensorData_Int16, "INT32": wit.TensorData_Int32, "INT64": wit.TensorData_Int64,
    "FP32": wit.TensorData_Fp32, "FP64": wit.TensorData_Fp64, "BYTES": wit.TensorData_Bytes,
}
_DATATYPE_OF = {cls: name for name, cls in _DATA.items()}
_INT_RANGES = {
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1), "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
}


class _Failures:
    """Turns whatever the author's code raises into the contract's `model-error`: InvalidInput → 422,
    Unsupported → 400, anything else → 500 with the exception and where it was raised, and the full
    traceback in the host's log."""

    def __init__(self, call: str):
        self.call = call

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, Err):
            return False
        if isinstance(error, sdk.InvalidInput):
            raise Err(wit.ModelError_InvalidInput(str(error)))
        if isinstance(error, sdk.Unsupported):
            raise Err(wit.ModelError_Unsupported(str(error)))
        if not isinstance(error, Exception):
            return False
        frames = traceback.extract_tb(tb)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        message = f"{self.call} raised {kind.__name__}: {error}{where}"
        if isinstance(error, ImportError):
            message += ("; a model has no filesystem at run time, so import every module at the top of "
                        "the model's file (it is bundled when `ferry build` snapshots the import)")
        # Capped well below the host's per-call log limit (64 KiB by default): a call that passes it traps,
        # and the trap would hide this message.
        _log("error", "".join(traceback.format_exception(kind, error, tb))[-_TRACEBACK_BYTES:])
        raise Err(wit.ModelError_Internal(message[:_MESSAGE_BYTES]))


_TRACEBACK_BYTES = 4096
_MESSAGE_BYTES = 4096


def _log(level: str, message: str) -> None:
    wit_log.log(_LEVELS[level], message)


def _the_model() -> sdk.Model:
    if _model is None:
        raise Err(wit.ModelError_Internal("the model was called before `init`"))
    return _model


def _tensor_in(t: wit.Tensor) -> sdk.Tensor:
    datatype = _DATATYPE_OF[type(t.data)]
    data: Any = t.data.value
    if datatype == "UINT8":
        data = list(data)
    elif datatype == "INT8":
        data = [b - 256 if b > 127 else b for b in data]
    return sdk.Tensor(t.name, datatype, t.shape, data)


def _integer(x: Any) -> int:
    # Accepts ints, integral floats and numpy-style integer scalars; refuses to round anything.
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, float):
        if not x.is_integer():
            raise TypeError
        return int(x)
    return int(x.__index__())


def _bytes(x: Any) -> bytes:
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError  # bytes(5) would be five zero bytes, not an error


def _tensor_out(t: sdk.Tensor) -> wit.Tensor:
    # Every element is checked here, where the message can name the tensor: a value the bindings
    # cannot lower would only trap the call.
    data: Any = t.data
    dt = t.datatype
    try:
        if dt in _INT_RANGES:
            lo, hi = _INT_RANGES[dt]
            data = [_integer(x) for x in data]
            bad = next((x for x in data if not lo <= x <= hi), None)
            if bad is not None:
                raise ValueError(f"output {t.name!r}: {bad} does not fit {dt}")
            if dt in ("UINT8", "INT8"):
                data = bytes(x & 0xFF for x in data)
        elif dt in ("FP32", "FP64"):
            data = [float(x) for x in data]
        elif dt == "BOOL":
            data = [bool(x) for x in data]
        else:
            data = [_bytes(x) for x in data]
    except (TypeError, AttributeError):
        raise ValueError(f"output {t.name!r}: an element is not a valid {dt} value") from None
    return wit.Tensor(t.name, list(t.shape), _DATA[dt](data))


def _spec(s: sdk.TensorSpec) -> wit.TensorSpec:
    return wit.TensorSpec(s.name, wit.Datatype[s.datatype], list(s.shape))


def _payload(entry_point: str, value: Any) -> Any:
    if entry_point == "infer":
        return wit.Payload_Tensors([_tensor_out(t) for t in value])
    return wit.Payload_Json(json.dumps(value))


def component(model_class: type[sdk.Model]) -> type:
    """The class componentize-py exports for the world's `model` interface, serving `model_class`."""
    if not (isinstance(model_class, type) and issubclass(model_class, sdk.Model)):
        raise TypeError(f"{model_class!r} is not a subclass of ferry_sdk.Model")
    sdk.log._sink = _log
    predicts = model_class.predict is not sdk.Model.predict

    class Model(exports.Model):
        def init(self, config: str, weights: bytes | None) -> None:
            global _model
            with _Failures("init"):
                model = model_class()
                model.init(json.loads(config), weights)
                _model = model

        def metadata(self) -> wit.ModelMetadata:
            # `metadata` cannot fail in the contract; a broken one shows as a trap with the traceback logged.
            m = _the_model().metadata()
            return wit.ModelMetadata(
                platform=m.platform,
                description=m.description,
                inputs=[_spec(s) for s in m.inputs],
                outputs=[_spec(s) for s in m.outputs],
                predicts_json=predicts if m.predicts_json is None else bool(m.predicts_json),
            )

        def infer(self, inputs: list[wit.Tensor], parameters: str) -> list[wit.Tensor]:
            with _Failures("infer"):
                request = sdk.Inputs([_tensor_in(t) for t in inputs], json.loads(parameters))
                return [_tensor_out(t) for t in _the_model().infer(request)]

        def predict(self, request: str) -> str:
            with _Failures("predict"):
                value = json.loads(request)
                if isinstance(value, dict):
                    value = sdk.Request(value)
                answer = _the_model().predict(value)
                try:
                    return json.dumps(answer, allow_nan=False)
                except ValueError:
                    raise ValueError("predict returned NaN or infinity, which JSON cannot carry") from None

        def self_tests(self) -> wit.SelfTestSuite:
            tests = _the_model().self_tests()
            return wit.SelfTestSuite(
                cases=[wit.SelfTest(name, _payload(kind, given), _payload(kind, expected), tolerance)
                       for kind, name, given, expected, tolerance in tests.cases],
                documents=list(tests.documents),
            )

    return Model
