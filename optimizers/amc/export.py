"""Export a pruned checkpoint: its weights (safetensors), the JSON config that rebuilds it, and
optionally a TFLite model with the trained weights, through the project's Keras builder and converter
(hil.devices.host.tflite_convert), so the file that runs on a phone is the network the LUT priced.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hil.devices.agent.backend import MeasureFailure
from hil.devices.host import tflite_convert as tc
from hil.errors import HilError
from hil.files import atomic_write
from hil.nets.models import ModelSpec
from hil.nets.torch_build import conv_paths
from hil.optimizers.amc.search import load_pruned
from hil.optimizers.data import fashion_mnist, normalize
from hil.workload import ConvLayer, Logits, MBConv

KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization's default, which the builder uses
CALIBRATION_IMAGES = 64


def torch_layers(model: nn.Module, spec: ModelSpec) -> list[nn.Module]:
    """Conv, BN and Linear modules in execution order: the order the Keras builder creates them."""
    out: list[nn.Module] = []
    for layer in spec.layers:
        for conv, bn in conv_paths(layer.workload):
            out.append(model.get_submodule(f"{layer.name}.{conv}" if conv else layer.name))
            if bn is not None:
                out.append(model.get_submodule(f"{layer.name}.{bn}"))
    return out


def load_into_keras(kmodel: Any, model: nn.Module, spec: ModelSpec) -> None:
    """Copy `model`'s weights into the Keras build of `spec.network()`, layer by layer."""
    from keras import layers

    keras_layers = [x for x in kmodel.layers
                    if isinstance(x, (layers.Conv2D, layers.DepthwiseConv2D, layers.BatchNormalization, layers.Dense))]
    ours = torch_layers(model, spec)
    if len(keras_layers) != len(ours):
        raise HilError(f"the Keras build of {spec.name} has {len(keras_layers)} weighted layers, torch {len(ours)}")
    for k, t in zip(keras_layers, ours, strict=True):
        with torch.no_grad():
            if isinstance(k, layers.DepthwiseConv2D):  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
                k.set_weights([t.weight.permute(2, 3, 0, 1).numpy()])
            elif isinstance(k, layers.Conv2D):  # (O, I, kh, kw) -> (kh, kw, I, O)
                k.set_weights([t.weight.permute(2, 3, 1, 0).numpy()])
            elif isinstance(k, layers.BatchNormalization):
                var = t.running_var.double()
                # same normalization under Keras's larger epsilon: rescale gamma
                gamma = t.weight.double() * torch.sqrt(var + KERAS_BN_EPS) / torch.sqrt(var + t.eps)
                k.set_weights([gamma.float().numpy(), t.bias.numpy(), t.running_mean.numpy(), t.running_var.numpy()])
            else:
                k.set_weights([t.weight.T.numpy(), t.bias.numpy()])


def keras_export_model(spec: ModelSpec) -> Any:
    """The Keras model of `spec` for deployment: the builder's layers, except that a strided conv pads
    k//2 on every side as torch does. The builder's "same" padding pads a stride-2 conv on the bottom
    and right only, which costs the same to run (the LUT's concern) but shifts the window by a pixel,
    so trained torch weights would compute something else."""
    tc._tf()
    import keras
    from keras import layers

    def conv_bn_act(x: Any, cout: int, k: int, stride: int, depthwise: bool, act: str) -> Any:
        pad = "same"
        if stride > 1:
            x = layers.ZeroPadding2D(k // 2)(x)
            pad = "valid"
        if depthwise:
            x = layers.DepthwiseConv2D(k, stride, padding=pad, use_bias=False)(x)
        else:
            x = layers.Conv2D(cout, k, stride, padding=pad, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return tc._activation(x, act, spec.name)

    first = spec.layers[0].workload
    inp = keras.Input(first.input, batch_size=1)  # type: ignore[attr-defined]
    x = inp
    for layer in spec.layers:
        w = layer.workload
        if isinstance(w, ConvLayer):
            x = conv_bn_act(x, w.output[2], w.kernel, w.stride, w.groups > 1, w.act)
        elif isinstance(w, MBConv):
            y = x
            if w.expand != 1:
                y = conv_bn_act(y, w.width, 1, 1, False, "relu6")
            y = conv_bn_act(y, w.width, w.kernel, w.stride, True, "relu6")
            y = conv_bn_act(y, w.output[2], 1, 1, False, "none")
            x = layers.Add()([x, y]) if w.idskip else y
        elif isinstance(w, Logits):
            x = layers.Dense(w.classes)(layers.GlobalAveragePooling2D()(x))
        else:
            raise HilError(f"layer {layer.name!r}: TFLite export does not build workload kind {w.kind!r}")
    return keras.Model(inp, x)


def export(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, tflite: str | None = None
           ) -> dict[str, Any]:
    model, spec, meta = load_pruned(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"weights": str(out / "model.safetensors"), "config": str(out / "model.json")}
    shutil.copyfile(checkpoint, out / "model.safetensors")
    config = {"model": spec.name, "options": spec.options, "macs": spec.macs, "params": spec.params,
              "layers": [{"name": x.name, "workload": x.workload.to_json()} for x in spec.layers],
              "amc": {k: v for k, v in meta.get("amc", {}).items() if k != "layers"}}
    atomic_write(out / "model.json", lambda p: p.write_text(json.dumps(config, indent=1)))
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "model": spec.name, "macs": spec.macs, "files": files}
    if tflite:
        net = spec.network()
        try:
            km = keras_export_model(spec)
            load_into_keras(km, model, spec)
            buf = tc.convert_keras(km, net, tflite, 1, representative=lambda: _calibration(spec, meta))
        except MeasureFailure as e:
            raise HilError(f"TFLite export of {checkpoint} failed: {e}") from None
        path = out / f"model-{tflite}.tflite"
        atomic_write(path, lambda p: p.write_bytes(buf))
        files["tflite"] = str(path)
        report["tflite_ops"] = [op.name for op in tc.model_ops(buf)]
        if isinstance(spec.layers[-1].workload, Logits):
            report["tflite_check"] = check_tflite(buf, model, spec, meta, tflite)
    return report


def _images(spec: ModelSpec, meta: dict[str, Any], n: int, split_name: str = "test") -> torch.Tensor:
    split = meta.get("data", {})
    data = fashion_mnist(val_size=split.get("val_size", 5000), seed=split.get("split_seed", 0),
                         size=spec.options["input_size"], train_limit=n, val_limit=1, test_limit=n)
    return normalize(getattr(data, split_name).images)


def _calibration(spec: ModelSpec, meta: dict[str, Any]) -> Iterator[list[Any]]:
    """Real (training) images for full-integer quantization, NHWC."""
    x = _images(spec, meta, CALIBRATION_IMAGES, "train")
    for i in range(len(x)):
        yield [x[i: i + 1].permute(0, 2, 3, 1).numpy().astype(np.float32)]


def check_tflite(buf: bytes, model: nn.Module, spec: ModelSpec, meta: dict[str, Any], precision: str
                 ) -> dict[str, Any]:
    """The TFLite model against torch on test images: top-1 agreement and max logit difference."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    x = _images(spec, meta, 100)
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    it = Interpreter(model_content=buf)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    got = []
    for i in range(len(x)):
        xi = x[i: i + 1].permute(0, 2, 3, 1).numpy().astype(np.float32)
        if precision == "int8":
            s, z = inp["quantization"]
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], xi)
        it.invoke()
        y = it.get_tensor(outp["index"]).astype(np.float32)
        if precision == "int8":
            s, z = outp["quantization"]
            y = (y - z) * s
        got.append(y[0])
    out = np.stack(got)
    return {"images": len(x), "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(out - ref).max())}
