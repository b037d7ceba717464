"""Host side of the TFLite target: workloads to `.tflite` models, cached by key, precision and converter.

Each workload is built as Keras layers (NHWC, the layout TFLite runs natively, so the converter
inserts no boundary transposes) with the semantics of `torch_build`: conv + BN + activation, the
MobileNetV2 inverted residual with ReLU6, global-average-pool + FC logits. tensorflow-cpu's
`TFLiteConverter` folds BN into the convolutions and fuses ReLU/ReLU6 into them, as a phone
deployment has them. Precisions:

- float32: as converted;
- float16: weights stored as float16 (LiteRT's CPU kernels compute in float32);
- int8: full-integer post-training quantization calibrated on a seeded representative dataset,
  with int8 inputs and outputs, so a block has no QUANTIZE/DEQUANTIZE at its boundary and the sum
  of blocks times the same ops as the whole network.

See docs/TFLITE.md for why this route. Needs the `tflite-convert` extra (tensorflow-cpu); the
targets themselves need only LiteRT.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.devices.agent.backend import MeasureFailure
from hil.files import atomic_write
from hil.workload import ConvLayer, Linear, Logits, MBConv, Network, Workload, canonical_json

# Bump when the Keras build of a workload changes: it is part of every cache key and fingerprint.
BUILDER_VERSION = "1"
PRECISIONS = ("float32", "float16", "int8")
REPRESENTATIVE_SAMPLES = 8
CACHE_ENV = "HIL_TFLITE_CACHE"

_convert_lock = threading.Lock()


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hil" / "tflite")


def _tf() -> Any:
    """Import tensorflow quietly, or say how to get it."""
    # TF's C++ start-up chatter (oneDNN, CPU features) goes to stderr; keep a user's own choice.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise MeasureFailure(
            "build_error",
            f"this host cannot convert models to TFLite: tensorflow is not importable ({e}); "
            "install it with: pip install -e '.[tflite-convert]'",
        ) from None
    return tf


def converter_version() -> str:
    """Identifies the converter: its versions and our builder's. Part of cache keys and fingerprints."""
    tf = _tf()
    import keras

    return f"tensorflow-{tf.__version__}/keras-{keras.__version__}/hil-builder-{BUILDER_VERSION}"


# --- Keras builds, mirroring hil.nets.torch_build ---------------------------------------------


def _activation(x: Any, act: str, key: str) -> Any:
    from keras import layers

    if act == "relu6":
        return layers.ReLU(max_value=6.0)(x)
    if act == "relu":
        return layers.ReLU()(x)
    if act == "none":
        return x
    raise MeasureFailure("unsupported", f"tflite: unknown activation {act!r} in {key}")


def _conv_bn_act(x: Any, cout: int, k: int, stride: int, groups: int, act: str, key: str) -> Any:
    from keras import layers

    cin = int(x.shape[-1])
    if groups == 1:
        x = layers.Conv2D(cout, k, stride, padding="same", use_bias=False)(x)
    elif groups == cin and cout == cin:
        x = layers.DepthwiseConv2D(k, stride, padding="same", use_bias=False)(x)
    else:
        x = layers.Conv2D(cout, k, stride, padding="same", groups=groups, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return _activation(x, act, key)


def _mbconv(x: Any, w: MBConv) -> Any:
    from keras import layers

    inp = x
    mid = w.width  # input channels x expand, or a pruned block's middle width
    if w.expand != 1:
        x = _conv_bn_act(x, mid, 1, 1, 1, "relu6", w.key)
    x = _conv_bn_act(x, mid, w.kernel, w.stride, mid, "relu6", w.key)
    x = _conv_bn_act(x, w.output[2], 1, 1, 1, "none", w.key)
    return layers.Add()([inp, x]) if w.idskip else x


def _apply(x: Any, w: Workload) -> Any:
    from keras import layers

    if isinstance(w, ConvLayer):
        return _conv_bn_act(x, w.output[2], w.kernel, w.stride, w.groups, w.act, w.key)
    if isinstance(w, MBConv):
        return _mbconv(x, w)
    if isinstance(w, Logits):
        return layers.Dense(w.classes)(layers.GlobalAveragePooling2D()(x))
    if isinstance(w, Linear):
        return layers.Dense(w.out_features)(x)
    if isinstance(w, Network):
        for layer in w.layers:
            x = _apply(x, layer)
        return x
    raise MeasureFailure("unsupported", f"the tflite backend cannot build workload kind {w.kind!r} ({w.key})")


def input_shape(w: Workload, batch: int) -> tuple[int, ...]:
    """NHWC shape (or batch x features) of the input a workload consumes."""
    if isinstance(w, Network):
        if not w.layers:
            raise MeasureFailure("unsupported", f"network {w.key} has no layers")
        return input_shape(w.layers[0], batch)
    if isinstance(w, Linear):
        return (batch, w.in_features)
    if isinstance(w, (ConvLayer, MBConv, Logits)):
        return (batch, *w.input)
    raise MeasureFailure("unsupported", f"the tflite backend cannot build workload kind {w.kind!r} ({w.key})")


def output_shape(w: Workload, batch: int) -> tuple[int, ...]:
    if isinstance(w, Network):
        return output_shape(w.layers[-1], batch)
    if isinstance(w, Linear):
        return (batch, w.out_features)
    if isinstance(w, Logits):
        return (batch, w.classes)
    return (batch, *w.output)  # type: ignore[attr-defined]


def _seed(w: Workload) -> int:
    return int.from_bytes(hashlib.sha256(w.key.encode()).digest()[:4], "little")


def keras_model(w: Workload, batch: int = 1) -> Any:
    """The Keras model of a workload, with seeded He-normal weights (deterministic per key)."""
    _tf()
    import keras
    import numpy as np
    from keras import layers

    shape = input_shape(w, batch)
    inp = keras.Input(shape[1:], batch_size=batch)
    try:
        out = _apply(inp, w)
        model = keras.Model(inp, out)
    except MeasureFailure:
        raise
    except Exception as e:  # Keras rejects the shapes (e.g. an identity skip across a shape change)
        raise MeasureFailure("build_error", f"tflite: Keras cannot build {w.key}: {e}") from None
    got = tuple(int(d) for d in model.output.shape)
    want = output_shape(w, batch)
    if got != want:
        msg = f"tflite: {w.key} builds to output shape {got}, the key says {want}"
        raise MeasureFailure("build_error", msg)
    rng = np.random.default_rng(_seed(w))
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        ks = tuple(int(d) for d in kernel.shape)
        # Conv2D (kh, kw, cin/groups, cout), DepthwiseConv2D (kh, kw, c, 1), Dense (in, out)
        fan_in = ks[0] * ks[1] if isinstance(layer, layers.DepthwiseConv2D) else int(np.prod(ks[:-1]))
        kernel.assign(rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), ks).astype("float32"))
    return model


def representative_data(
    w: Workload, batch: int, samples: int = REPRESENTATIVE_SAMPLES
) -> Iterator[list[Any]]:
    """Seeded standard-normal inputs: the calibration set of full-integer quantization."""
    import numpy as np

    rng = np.random.default_rng(_seed(w) ^ 0x5EED)
    shape = input_shape(w, batch)
    for _ in range(samples):
        yield [rng.standard_normal(shape, dtype=np.float32)]


def convert(w: Workload, precision: str = "float32", batch: int = 1) -> bytes:
    """Convert one workload to a TFLite flatbuffer. Raises MeasureFailure('build_error') naming it."""
    if precision not in PRECISIONS:
        known = ", ".join(PRECISIONS)
        raise MeasureFailure("unsupported", f"tflite: precision {precision!r} is not one of {known}")
    return convert_keras(keras_model(w, batch), w, precision, batch)


def convert_keras(model: Any, w: Workload, precision: str = "float32", batch: int = 1,
                  representative: Callable[[], Iterator[list[Any]]] | None = None) -> bytes:
    """Convert `model`, the Keras build of `w` (`keras_model`), perhaps with trained weights put in
    it, to a TFLite flatbuffer; int8 calibrates on `representative` (default: seeded noise)."""
    if precision not in PRECISIONS:
        known = ", ".join(PRECISIONS)
        raise MeasureFailure("unsupported", f"tflite: precision {precision!r} is not one of {known}")
    tf = _tf()
    with _convert_lock, tempfile.TemporaryDirectory(prefix="hil-tflite-") as tmp:
        try:
            # Through a SavedModel, so variables are frozen into constants and BN folds away.
            # The signature pins the batch; inferred, it would be None, which the converter makes 1.
            spec = tf.TensorSpec(input_shape(w, batch), tf.float32)
            model.export(tmp, format="tf_saved_model", verbose=False, input_signature=[spec])
            conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
            if precision == "float16":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.target_spec.supported_types = [tf.float16]
            elif precision == "int8":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = representative or (lambda: representative_data(w, batch))
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
            return bytes(conv.convert())
        except Exception as e:
            msg = " ".join(str(e).split())[:500]
            raise MeasureFailure(
                "build_error", f"TFLite converter failed on {w.key} ({precision}): {type(e).__name__}: {msg}"
            ) from None


# --- what is in a flatbuffer (for tests and docs; the schema module ships with LiteRT) -----------


@dataclass(frozen=True)
class OpInfo:
    name: str  # builtin operator name, e.g. "CONV_2D"
    fused_activation: str | None  # "RELU6", "NONE", ... for ops that fuse one


def model_ops(buf: bytes) -> list[OpInfo]:
    """The operators of the first subgraph, in order, with their fused activations."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    act_names = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    options = {
        "CONV_2D": schema.Conv2DOptions,
        "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions,
        "ADD": schema.AddOptions,
        "FULLY_CONNECTED": schema.FullyConnectedOptions,
    }
    model = schema.Model.GetRootAs(buf, 0)
    graph = model.Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        act = None
        table = op.BuiltinOptions()
        if name in options and table is not None:
            opts = options[name]()
            opts.Init(table.Bytes, table.Pos)
            act = act_names.get(opts.FusedActivationFunction())
        out.append(OpInfo(name, act))
    return out


# --- the cache -------------------------------------------------------------------------------------


class ConverterCache:
    """`.tflite` models on the host, converted on first use and kept by content-defining key.

    The cache key is (workload JSON, precision, batch, converter version); a file appears only
    complete (written to a temporary name, then renamed), so concurrent builds and interrupted ones
    never see half a model. Beside each model, a JSON sidecar says what it is.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._version: str | None = None

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = converter_version()
        return self._version

    def cache_key(self, w: Workload, precision: str, batch: int) -> str:
        ident = {"workload": w.to_json(), "precision": precision, "batch": batch, "converter": self.version}
        return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:24]

    def model_path(self, w: Workload, precision: str = "float32", batch: int = 1) -> Path:
        """Path of the converted model, converting it now if the cache lacks it."""
        digest = self.cache_key(w, precision, batch)
        path = self.root / f"{digest}.tflite"
        if path.is_file():
            return path
        buf = convert(w, precision, batch)
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"key": w.key, "precision": precision, "batch": batch, "converter": self.version,
                "bytes": len(buf), "ops": [op.name for op in model_ops(buf)]}
        atomic_write(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta, indent=1)))
        atomic_write(path, lambda p: p.write_bytes(buf))
        return path
