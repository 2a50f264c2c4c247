"""What the graph readers share (ONNX, LiteRT, Core ML): SqueezeNet's variant and canonical
weights found among the convolutions a graph computes.

A reader turns each convolution of its file into a :class:`Conv` (weight OIHW
``[out, in, kH, kW]``, bias ``[out]``, stride, padding), in the order the graph runs them,
and describes its concatenations; the judgements are made here, once:

* :func:`variant_of`: 26 convolutions (30 with the complex bypass); the version from the
  first one's weight shape, ``num_classes`` from the last one's filters and
  ``final_conv_padding`` from its padding; the simple bypass where the reader found an add
  of two computed tensors;
* :func:`match`: the convolutions cut into the spec's groups in order (conv1, each Fire's 3
  or 4, conv10), each canonical conv of a group matched by weight shape, stride and padding
  (names are not trusted: a file's own names only refuse a weight that sits where another
  layer's name says it does not belong);
* :func:`check_concat_order`: every Fire concatenates expand1x1 before expand3x3 (the other
  order computes the same shapes and a different function).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from .canonical import infer_variant

__all__ = ["Conv", "variant_of", "match", "source_conv", "concat_positions",
           "check_concat_order", "tensors_of"]


@dataclass
class Conv:
    """One convolution of a graph, as its reader found it."""

    key: Hashable              # the reader's handle on the node (found again in concats)
    label: str                 # how an error names it (its name in the file)
    w: np.ndarray              # [out, in, kH, kW] (OIHW), float32
    b: np.ndarray              # [out]
    stride: int
    pad: int                   # the same on every side
    weight_name: str | None = None  # the weight tensor's name, where the file names one


def variant_of(convs: Sequence[Conv], *, simple_bypass: bool, requested: Variant | None,
               op: str = "Conv") -> Variant:
    """The variant the graph computes (``op``: what the file calls a convolution, for the
    errors); it must be ``requested`` where one is."""
    if len(convs) not in (26, 30):
        raise WeightsError(f"the graph has {len(convs)} {op} operations; SqueezeNet has 26 "
                           "(30 with the complex bypass)")
    stem, head = convs[0], convs[-1]
    if head.pad not in (0, 1):
        raise WeightsError(f"last {op} {head.label!r} (conv10) has pads {head.pad}, expected "
                           "0 or 1")
    bypass = "complex" if len(convs) == 30 else "simple" if simple_bypass else "none"
    found = infer_variant(stem.w.shape, head.w.shape,
                          names=(f"first {op} {stem.label!r}", f"last {op} {head.label!r}"),
                          bypass=bypass, final_conv_padding=int(head.pad))
    if requested is not None and requested != found:
        raise WeightsError(f"the graph is SqueezeNet {found.id}, not the requested "
                           f"{requested.id}")
    return found


def match(convs: Sequence[Conv], variant: Variant, *, op: str = "Conv",
          shape: Callable[[tuple], tuple] = tuple, noun: str = "weight",
          known: Mapping[str, str] | None = None) -> dict[str, Conv]:
    """Canonical conv name -> its :class:`Conv`: the spec's groups in graph order, inside a
    group by weight shape, stride and padding.  ``shape`` shows a weight shape in the
    file's own layout (``noun``: what the file calls it); ``known``: weight names known
    exporters give a conv -> that canonical conv."""
    groups: list[list[S.Conv]] = []
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            groups.append([layer])
        elif isinstance(layer, S.Fire):
            groups.append(list(layer.convs()))
    matched: dict[str, Conv] = {}
    start = 0
    for group in groups:
        pool = list(convs[start:start + len(group)])
        start += len(group)
        for c in group:
            hits = [g for g in pool if tuple(g.w.shape) == c.weight_shape
                    and g.stride == c.stride and g.pad == c.padding]
            if len(hits) != 1:
                seen = ", ".join(f"{g.label} {list(shape(g.w.shape))} stride {g.stride} pad "
                                 f"{g.pad}" for g in pool)
                raise WeightsError(f"{c.name}: expected one {op} with {noun} "
                                   f"{list(shape(c.weight_shape))}, stride {c.stride}, "
                                   f"pad {c.padding} among [{seen}]")
            g = hits[0]
            if g.b.shape != (c.out_channels,):
                raise WeightsError(f"{c.name}: bias shape {list(g.b.shape)}, expected "
                                   f"[{c.out_channels}]")
            other = (known or {}).get(g.weight_name)
            if other is not None and other != c.name:
                raise WeightsError(f"weight {g.weight_name!r} sits where {c.name} belongs, but "
                                   f"that name is {other}'s")
            matched[c.name] = g
            pool.remove(g)
    return matched


def source_conv(tensor: Hashable, producer: Callable[[Hashable], tuple | None], *,
                conv: str, through: Iterable[str]) -> Hashable | None:
    """The key of the convolution ``tensor`` comes from, through at most 8 nodes of the
    kinds ``through`` (ReLU, identity); ``producer(tensor)`` gives the node that makes a
    tensor as ``(kind, input tensors, key)``, or ``None``."""
    through = set(through)
    for _ in range(8):
        node = producer(tensor)
        if node is None:
            return None
        kind, inputs, key = node
        if kind == conv:
            return key
        if kind not in through or not inputs:
            return None
        tensor = inputs[0]
    return None


def concat_positions(concats: Iterable[tuple[Hashable, Sequence]],
                     source: Callable[[Hashable], Hashable | None]) -> dict:
    """Convolution key -> ``(concat, position)`` for every input of every concatenation
    (``concats``: ``(concat key, its input tensors)``) that comes from a convolution."""
    out = {}
    for concat, inputs in concats:
        for position, tensor in enumerate(inputs):
            key = source(tensor)
            if key is not None:
                out[key] = (concat, position)
    return out


def check_concat_order(variant: Variant, matched: Mapping[str, Conv], positions: Mapping,
                       what: str = "graph") -> None:
    """Every Fire's concatenation puts expand1x1 first (``positions``: from
    :func:`concat_positions`)."""
    for fire in variant.fires():
        a = positions.get(matched[fire.expand1x1.name].key)
        b = positions.get(matched[fire.expand3x3.name].key)
        if a and b and a[0] == b[0] and a[1] > b[1]:
            raise WeightsError(f"{fire.name}: the {what} concatenates expand3x3 before "
                               "expand1x1")


def tensors_of(matched: Mapping[str, Conv]) -> dict[str, np.ndarray]:
    """The canonical tensors of the matched convolutions (``NAME.weight``, ``NAME.bias``)."""
    out = {}
    for name, g in matched.items():
        out[f"{name}.weight"], out[f"{name}.bias"] = g.w, g.b
    return out
