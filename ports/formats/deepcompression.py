"""The Deep Compression ``.net`` format (Han et al., SqueezeNet v1.0 release): read and write.

The file has no magic number, no names and no shapes; shapes come from the architecture
(:mod:`ports.spec`).  All numbers are little-endian.  For L weighted layers in spec order
(``conv1``; per fire ``squeeze``, ``expand1x1``, ``expand3x3`` [, ``bypass``]; ``conv10``)::

    header   uint32[L]              n_l: stored entries of layer l (non-zeros + fillers)
    per layer l, back to back:
      codebook float32[2**b]        b = 8 (256 entries); entry 0 is 0.0
      bias     float32[C_out]       not quantized
      codes    uint8[n_l]           one 8-bit codebook index per stored entry
                                    (b = 4: ceil(n_l/2) bytes, two codes per byte, low
                                    nibble first)
      gaps     uint8[ceil(n_l/2)]   two 4-bit gaps per byte, low nibble first

The flat position (into the OIHW-flattened weight ``[O, I, kH, kW]``) of entry k is
``pos_k = pos_{k-1} + gap_k + 1`` from ``pos_{-1} = -1``; positions never written hold
code 0.  Zero runs longer than 16 are bridged by filler entries with code 0.  The file ends
exactly after the last layer: ``4*L + sum(4*2**b + 4*C_out + code bytes + ceil(n_l/2))``.

The file carries no metadata: a file whose size fits conv1 with 96 filters is SqueezeNet
v1.0 as released (``final_conv_padding=1``, Caffe preprocessing); one that fits 64 filters is
v1.1 (``final_conv_padding=0``).  Pass ``variant=`` to read any other variant (the bypass
kind and conv10 padding are not recorded in the file).

Layer names of the release (``DC_NAMES``): ``conv1``, ``fireN/conv1x1_1`` (squeeze),
``fireN/conv1x1_2`` (expand1x1), ``fireN/conv3x3_2`` (expand3x3), ``conv_final`` (conv10).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import WeightsError
from ..spec import Variant
from ._io import atomic_write
from .canonical import Weights, make

NAME = "deepcompression"
BITS = 8
# Variants a file with no explicit variant may be: told apart by conv1's bias length.
DEFAULT_VARIANTS = (Variant("1_0", 1000, 1, "none"), Variant("1_1", 1000, 0, "none"))

# Canonical layer (conv) name -> Deep Compression release layer name.
_FIRE_DC = {"squeeze": "conv1x1_1", "expand1x1": "conv1x1_2", "expand3x3": "conv3x3_2",
            "bypass": "bypass"}


def dc_layer_name(canonical_conv: str) -> str:
    """``"fire2.squeeze"`` -> ``"fire2/conv1x1_1"``; ``"conv10"`` -> ``"conv_final"``."""
    if canonical_conv == "conv10":
        return "conv_final"
    if canonical_conv == "conv1":
        return "conv1"
    fire, _, part = canonical_conv.partition(".")
    if not fire.startswith("fire") or part not in _FIRE_DC:
        raise KeyError(canonical_conv)
    return f"{fire}/{_FIRE_DC[part]}"


def name_table(variant: Variant) -> dict[str, str]:
    """Deep Compression layer name -> canonical conv name, in file (spec) order."""
    return {dc_layer_name(c.name): c.name for c in variant.convs()}


DC_NAMES = name_table(Variant("1_0", 1000, 1, "none"))


def _expected_size(variant: Variant, counts: np.ndarray, bits: int) -> int:
    convs = list(variant.convs())
    total = 4 * len(convs)
    for conv, n in zip(convs, counts.tolist()):
        code_bytes = n if bits == 8 else (n + 1) // 2
        total += 4 * 2 ** bits + 4 * conv.out_channels + code_bytes + (n + 1) // 2
    return total


def read(path, *, variant: Variant | None = None, bits: int = BITS) -> Weights:
    """Decode ``path`` into canonical weights (float32 OIHW).  See the module docstring."""
    candidates = (variant,) if variant is not None else DEFAULT_VARIANTS
    largest = max(_expected_size(v, np.array([math.prod(c.weight_shape) for c in v.convs()]),
                                 bits) for v in candidates)
    size = os.path.getsize(path)
    if size > largest:  # checked before reading: a wrong file may be huge
        raise WeightsError(f"file is {size} bytes; a .net of "
                           f"{' or '.join(v.id for v in candidates)} has at most {largest}")
    with open(path, "rb") as f:
        blob = f.read(largest + 1)
    return decode(blob, path=path, variant=variant, bits=bits)


class Layer(NamedTuple):
    """One layer as the file stores it: ``codebook`` float32[2**bits] (entry 0 is 0.0),
    ``bias`` float32[C_out], ``codes`` uint8[n] (codebook indices of the stored entries) and
    ``gaps`` uint8[n] (zeros skipped before each entry, 0..15; fillers are code 0, gap 15)."""

    name: str          # canonical conv name
    codebook: np.ndarray
    bias: np.ndarray
    codes: np.ndarray
    gaps: np.ndarray

    def flat_codes(self, size: int) -> np.ndarray:
        """The codebook index of each of the layer's ``size`` weights (OIHW flattened)."""
        code = np.zeros(size, np.uint8)
        code[np.cumsum(self.gaps.astype(np.int64) + 1) - 1] = self.codes
        return code


def parse(blob: bytes, *, variant: Variant | None = None,
          bits: int = BITS) -> tuple[Variant, list[Layer]]:
    """The layers of a ``.net`` file as stored (no decoding of weights); raises
    :class:`WeightsError` on any inconsistency."""
    if bits not in (4, 8):
        raise ValueError(f"bits: expected 4 or 8, got {bits!r}")
    candidates = (variant,) if variant is not None else DEFAULT_VARIANTS
    num_layers = len(list(candidates[0].convs()))
    if len(blob) < 4 * num_layers:
        raise WeightsError(f"file is {len(blob)} bytes, too short for the {num_layers}-entry "
                           f"uint32 header ({4 * num_layers} bytes)")
    counts = np.frombuffer(blob, dtype="<u4", count=num_layers).astype(np.int64)
    sizes = {v: _expected_size(v, counts, bits) for v in candidates}
    matching = [v for v, size in sizes.items() if size == len(blob)]
    if not matching:
        expect = " or ".join(f"{size} ({v.id})" for v, size in sizes.items())
        raise WeightsError(f"file is {len(blob)} bytes; its header's entry counts imply {expect} "
                           f"with {bits}-bit codebooks (truncated, extra bytes, or not a .net "
                           "file)")
    variant = matching[0]
    layers = []
    offset = 4 * num_layers
    for conv, n in zip(variant.convs(), counts.tolist()):
        layer = f"layer {dc_layer_name(conv.name)} ({conv.name})"
        size = math.prod(conv.weight_shape)
        if n > size:
            raise WeightsError(f"{layer}: header counts {n} stored entries, more than the "
                               f"{size} weights of shape {list(conv.weight_shape)}")
        # All lengths were checked against the file size above; slices cannot overrun.
        codebook = np.frombuffer(blob, "<f4", 2 ** bits, offset).astype(np.float32)
        offset += 4 * 2 ** bits
        bias = np.frombuffer(blob, "<f4", conv.out_channels, offset).astype(np.float32)
        offset += 4 * conv.out_channels
        if bits == 8:
            codes = np.frombuffer(blob, np.uint8, n, offset).copy()
            offset += n
        else:
            codes = _nibbles(np.frombuffer(blob, np.uint8, (n + 1) // 2, offset), n)
            offset += (n + 1) // 2
        gaps = _nibbles(np.frombuffer(blob, np.uint8, (n + 1) // 2, offset), n)
        offset += (n + 1) // 2
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if n and positions[-1] >= size:
            first = int(np.argmax(positions >= size))
            raise WeightsError(f"{layer}: entry {first} of {n} lands at flat position "
                               f"{int(positions[first])}, past the end of its {size} weights")
        for what, arr in (("codebook", codebook), ("bias", bias)):
            if not np.isfinite(arr).all():
                raise WeightsError(f"{layer}: {int((~np.isfinite(arr)).sum())} non-finite {what} "
                                   "values")
        layers.append(Layer(conv.name, codebook, bias, codes, gaps))
    assert offset == len(blob)
    return variant, layers


def decode(blob: bytes, *, path=None, variant: Variant | None = None,
           bits: int = BITS) -> Weights:
    """Decode the bytes of a ``.net`` file; raises :class:`WeightsError` on any inconsistency."""
    variant, layers = parse(blob, variant=variant, bits=bits)
    tensors = tensors_of(variant, layers)
    source = f"Deep Compression .net ({os.path.basename(os.fspath(path))})" if path else \
        "Deep Compression .net"
    return make(tensors, variant, preprocessing="caffe", source=source)


def tensors_of(variant: Variant, layers: list[Layer]) -> dict[str, np.ndarray]:
    """Canonical tensors of stored layers: every weight its codebook entry (OIHW)."""
    tensors: dict[str, np.ndarray] = {}
    for conv, layer in zip(variant.convs(), layers):
        code = layer.flat_codes(math.prod(conv.weight_shape))
        tensors[f"{conv.name}.weight"] = layer.codebook[code].reshape(conv.weight_shape)
        tensors[f"{conv.name}.bias"] = layer.bias
    return tensors


def _nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """uint8[ceil(n/2)] -> uint8[n]: low nibble first, then high nibble."""
    out = np.empty(2 * len(packed), np.uint8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    return out[:n]


def _pack_nibbles(values: np.ndarray) -> bytes:
    """uint8[n] (each < 16) -> ceil(n/2) bytes, low nibble first."""
    v = np.zeros(len(values) + len(values) % 2, np.uint8)
    v[:len(values)] = values
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()


def relative_index(flat_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored entries of a layer whose weights have codebook indices ``flat_codes``
    (uint8, OIHW flattened, 0 = the zero entry): ``(codes, gaps)``, uint8[n] each.  Every
    non-zero index is an entry whose gap counts the zeros before it; a run of more than 15
    zeros is bridged by filler entries (code 0, gap 15), each standing for 16 positions.
    Zeros after the last non-zero are not stored."""
    nz = np.flatnonzero(flat_codes)
    prev = np.concatenate([[-1], nz[:-1]])
    gap = nz - prev - 1                     # zeros before each non-zero
    fillers = gap // 16                     # each filler consumes 16 positions
    ends = np.cumsum(fillers + 1) - 1       # entry index of each non-zero
    n = int(ends[-1]) + 1 if len(nz) else 0
    codes = np.zeros(n, np.uint8)
    codes[ends] = flat_codes[nz]
    gaps = np.full(n, 15, np.uint8)         # fillers: 15 zeros + their own 0.0
    gaps[ends] = gap - 16 * fillers
    return codes, gaps


def pack(layers: list[Layer], bits: int = BITS) -> bytes:
    """The bytes of a ``.net`` file holding ``layers`` (in spec order) with ``bits``-bit
    codebooks: the inverse of :func:`parse`."""
    header, body = [], []
    for layer in layers:
        if len(layer.codebook) != 2 ** bits or layer.codebook[0] != 0:
            raise WeightsError(f"{layer.name}: a {bits}-bit .net codebook has {2 ** bits} "
                               "entries, entry 0 being 0.0")
        if len(layer.codes) and int(layer.codes.max()) >= 2 ** bits:
            raise WeightsError(f"{layer.name}: code {int(layer.codes.max())} does not fit "
                               f"{bits} bits")
        codes = layer.codes.astype(np.uint8)
        header.append(len(codes))
        body += [np.asarray(layer.codebook, "<f4").tobytes(),
                 np.asarray(layer.bias, "<f4").tobytes(),
                 codes.tobytes() if bits == 8 else _pack_nibbles(codes),
                 _pack_nibbles(layer.gaps)]
    return np.asarray(header, "<u4").tobytes() + b"".join(body)


def encode(weights: Weights) -> bytes:
    """Lossless 8-bit encoding of ``weights``: each layer's distinct weight values (by bit
    pattern, -0.0 distinct from 0.0) other than +0.0 must number at most 255; they become
    codebook entries 1..255 (entry 0 is 0.0).  Raises :class:`WeightsError` otherwise."""
    layers = []
    for conv in weights.variant.convs():
        w = np.ascontiguousarray(weights[f"{conv.name}.weight"], dtype="<f4").reshape(-1)
        bits_view = w.view("<u4")
        values = np.unique(bits_view[bits_view != 0])
        if len(values) > 2 ** BITS - 1:
            raise WeightsError(
                f"{conv.name}.weight has {len(values)} distinct non-zero values; the .net "
                f"format stores at most {2 ** BITS - 1} per layer (an 8-bit codebook), so it "
                "cannot hold these weights losslessly (quantize them first: tools/compress)")
        codebook = np.zeros(2 ** BITS, "<u4")
        codebook[1:len(values) + 1] = values
        flat = np.zeros(len(w), np.uint8)
        nz = bits_view != 0
        flat[nz] = np.searchsorted(values, bits_view[nz]) + 1
        codes, gaps = relative_index(flat)
        layers.append(Layer(conv.name, codebook.view("<f4"),
                            np.asarray(weights[f"{conv.name}.bias"], "<f4"), codes, gaps))
    return pack(layers)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write ``weights`` as a ``.net`` file (see :func:`encode` for what can be written)."""
    return [atomic_write(path, encode(weights), overwrite=overwrite)]
