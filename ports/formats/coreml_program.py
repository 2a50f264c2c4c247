"""An evaluator of a saved Core ML model's own ops, in NumPy float32.

:func:`run` executes, in file order, every op of an ``.mlpackage``'s ML program (every layer
of an ``.mlmodel`` NeuralNetwork) as the file states it: its inputs, its constants (the
weights from ``weight.bin`` or ``WeightParams``) and its attributes (strides, pads,
``ceil_mode`` / ``includeLastPixel``, concat axis, reduction axes ...), read by
:func:`ports.formats.coreml.graph_of` -- never from the reference network.  An op of a kind
it does not know is refused with a :class:`ports.errors.WeightsError` naming it.  What it
computes is what Core ML is asked to compute, so a planted defect in the file (a weight, a
pool's rounding, a padding) shows in the logits.

Every tensor is float32 (inputs, weights, intermediate values: the precision the file asks
for); a convolution is one matrix product over its im2col patches.

    logits = run("m.mlpackage", x)                 # x: float32 [N, 3, H, W]
    outs = activations("m.mlpackage", x)           # every op's output, by the file's names
    trace = spec_activations("m.mlpackage", x)     # by the spec's names (our own files)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import WeightsError
from ..spec import Variant
from . import coreml, coreml_package
from ._folder import read_file

Source = Union[str, os.PathLike, coreml.Graph]

__all__ = ["load", "run", "activations", "spec_activations"]


def load(source: Source) -> coreml.Graph:
    """The :class:`ports.formats.coreml.Graph` of an ``.mlpackage`` folder or an ``.mlmodel``
    file (a graph is returned as it is)."""
    if isinstance(source, coreml.Graph):
        return source
    path = Path(source)
    if path.is_dir():
        return coreml_package.load(path)
    blob = read_file(path, "the model file", limit=coreml.MAX_BYTES, noun="a Core ML model")
    return coreml.graph_of(coreml.parse_model(blob))


# --- the ops -----------------------------------------------------------------------------------
def _pad(x: np.ndarray, pads, value: float) -> np.ndarray:
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, strides, pads) -> np.ndarray:
    """NCHW convolution (OIHW weight), float32, as one matrix product."""
    o, i, kh, kw = weight.shape
    if x.shape[1] != i:
        raise WeightsError(f"a conv with {i} input channels is given {x.shape[1]}")
    x = _pad(x, pads, 0.0)
    sh, sw = strides
    n, c, h, w = x.shape
    if h < kh or w < kw:
        raise WeightsError(f"input {h}x{w} is smaller than a {kh}x{kw} kernel")
    if kh == kw == 1:
        cols = x[:, :, ::sh, ::sw]
        ho, wo = cols.shape[2:]
        flat = cols.transpose(0, 2, 3, 1).reshape(-1, c)
        out = flat @ weight.reshape(o, i).T
    else:
        win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
        ho, wo = win.shape[2:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
        out = cols @ weight.reshape(o, -1).T
    out += bias
    return np.ascontiguousarray(out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2))


def _out_size(size: int, k: int, s: int, before: int, after: int, ceil: bool) -> int:
    span = size + before + after - k
    if span < 0:
        raise WeightsError(f"input side {size} is smaller than a pooling window of {k}")
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + before:  # the last window must start inside
        out -= 1
    return out


def pool(x: np.ndarray, kind: str, kernel, strides, pads, ceil: bool,
         exclude_padding: bool = False) -> np.ndarray:
    """Max or average pooling, NCHW; ``ceil``: output sizes rounded up (the last window may
    hang over the bottom/right edge, where it sees nothing)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (t, b, lft, r) = kernel, strides, pads
    ho = _out_size(h, kh, sh, t, b, ceil)
    wo = _out_size(w, kw, sw, lft, r, ceil)
    extra_b = max(0, (ho - 1) * sh + kh - (h + t + b))
    extra_r = max(0, (wo - 1) * sw + kw - (w + lft + r))
    if kind == "max_pool":
        xp = _pad(x, (t, b + extra_b, lft, r + extra_r), -np.inf)
        win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]
        return win.max(axis=(4, 5))
    xp = _pad(x, (t, b + extra_b, lft, r + extra_r), 0.0)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]
    total = win.sum(axis=(4, 5), dtype=np.float32)
    inside = np.zeros((h + t + b + extra_b, w + lft + r + extra_r), np.float32)
    if exclude_padding:
        inside[t:t + h, lft:lft + w] = 1
    else:
        inside[:h + t + b, :w + lft + r] = 1
    counts = sliding_window_view(inside, (kh, kw))[::sh, ::sw][:ho, :wo].sum(axis=(2, 3))
    return (total / counts).astype(np.float32)


def _axes(axes, ndim: int, label: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise WeightsError(f"{label}: axis {a} out of range for rank {ndim}")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def _execute(node: coreml.Node, args: list[np.ndarray]) -> np.ndarray:
    a, kind, label = node.attrs, node.kind, f"{node.kind} {node.label[:80]!r}"
    x = args[0]
    if kind in ("conv", "max_pool", "avg_pool") and x.ndim != 4:
        raise WeightsError(f"{label}: input of rank {x.ndim}, expected NCHW")
    if kind == "conv":
        return conv(x, a["weight"], a["bias"], a["strides"], a["pads"])
    if kind == "relu":
        return np.maximum(x, np.float32(0))
    if kind == "identity":
        return x
    if kind in ("max_pool", "avg_pool"):
        if a["global"]:
            return (x.max(axis=(2, 3), keepdims=True) if kind == "max_pool"
                    else x.mean(axis=(2, 3), keepdims=True, dtype=np.float32))
        return pool(x, kind, a["kernel"], a["strides"], a["pads"], a["ceil"],
                    a["exclude_padding"])
    if kind == "concat":
        if len({t.ndim for t in args}) != 1:
            raise WeightsError(f"{label}: inputs of different ranks")
        axis = _axes([a["axis"]], x.ndim, label)[0]
        shapes = {t.shape[:axis] + t.shape[axis + 1:] for t in args}
        if len(shapes) != 1:
            raise WeightsError(f"{label}: inputs {[list(t.shape) for t in args]} do not fit")
        return np.concatenate(args, axis=axis)
    if kind == "add":
        out = args[0]
        for t in args[1:]:
            try:
                out = np.add(out, t)
            except ValueError:
                raise WeightsError(f"{label}: shapes {list(out.shape)} and {list(t.shape)} do "
                                   "not broadcast") from None
        return out
    if kind == "mean":
        axes = _axes(a["axes"], x.ndim, label)
        return x.mean(axis=axes, keepdims=a["keep"], dtype=np.float32)
    if kind == "flatten":
        axis = _axes([a["axis"]], x.ndim, label)[0] if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    if kind == "squeeze":
        axes = a["axes"]
        if axes is None:
            return np.squeeze(x)
        axes = _axes(axes, x.ndim, label)
        if any(x.shape[i] != 1 for i in axes):
            raise WeightsError(f"{label}: squeezes an axis of size other than 1")
        return np.squeeze(x, axis=axes)
    if kind == "reshape":
        shape = list(a["shape"])
        if a.get("keep_batch"):  # a NeuralNetwork reshape keeps the batch axis
            shape = [x.shape[0], *shape]
        if shape.count(-1) > 1 or any(d < -1 for d in shape):
            raise WeightsError(f"{label}: target shape {shape}")
        shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
        try:
            return x.reshape(shape)
        except ValueError:
            raise WeightsError(f"{label}: cannot reshape {list(x.shape)} to {shape}") from None
    raise WeightsError(f"op {kind!r} ({node.label[:80]!r}) is not one this evaluator runs")


def _check_input(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"expected a float32 array, got {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3 or 0 in x.shape:
        raise ValueError(f"expected a float32 NCHW batch [N, 3, H, W], got {list(x.shape)}")
    return np.ascontiguousarray(x)


def activations(source: Source, x) -> dict[str, np.ndarray]:
    """Every op's output, by its name in the file, in file order (the input first)."""
    graph = load(source)
    env = {graph.input: _check_input(x)}
    for node in graph.nodes:
        try:
            args = [env[name] for name in node.inputs]
        except KeyError as e:  # pragma: no cover - graph_of checked every input's producer
            raise WeightsError(f"{node.kind} {node.label!r}: input {e.args[0]!r} is missing") \
                from None
        out = _execute(node, args)
        if out.dtype != np.float32:  # pragma: no cover - every op keeps float32
            out = out.astype(np.float32)
        env[node.output] = out
    return env


def run(source: Source, x) -> np.ndarray:
    """The model's output (the logits) for ``x``, float32 NCHW ``[N, 3, H, W]``."""
    graph = load(source)
    return activations(graph, x)[graph.output]


def spec_activations(source: Source, x, variant: Variant | None = None) -> dict[str, np.ndarray]:
    """The activations of :meth:`ports.spec.Variant.activation_names` found in one of our own
    files (ML program: ``fire2_squeeze``; NeuralNetwork: ``fire2.squeeze``), ``pool10`` and
    ``logits`` being the output.  ``variant``: default, the file's own metadata's."""
    graph = load(source)
    if variant is None:
        if not graph.meta:
            raise WeightsError("the file holds no squeezenet metadata; name the variant")
        variant = Variant.from_meta(graph.meta)
    env = activations(graph, x)
    out = {}
    for name in variant.activation_names():
        if name in ("pool10", "logits"):
            out[name] = env[graph.output]
            continue
        for key in (name, name.replace(".", "_")):
            if key in env:
                out[name] = env[key]
                break
        else:
            raise WeightsError(f"no output named {name!r} in the file")
    return out
