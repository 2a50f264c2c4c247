"""``.dcz``: Deep Compression with Huffman-coded codes and gaps, 2- to 8-bit codebooks.

The compact container of ``tools/compress``; byte by byte in ``docs/dcz-format.md``.  All
numbers are little-endian::

    magic     4 bytes   89 44 43 5A ("\\x89DCZ")
    version   uint8     1
    bits      uint8     B, 2..8: every codebook has 2**B float32 entries, entry 0 is 0.0
    maxlen    uint8     M, 1..15: no Huffman code of the file is longer
    reserved  uint8     0
    metalen   uint32    J <= 65536
    meta      J bytes   UTF-8 JSON object of strings: the canonical metadata (variant, ...)
    layers    uint16    L: the variant's convolutions, in spec order
    per layer:
      n          uint32       stored entries (non-zero weights + fillers), at most the
                              layer's weights
      codebook   float32[2**B]
      bias       float32[C_out]
      codelens   uint8[2**B]  Huffman code length of each codebook index (0: unused)
      gaplens    uint8[16]    Huffman code length of each gap 0..15 (0: unused)
      codebytes  uint32       then the n codes' Huffman codes, MSB first, zero-padded
      gapbytes   uint32       then the n gaps' Huffman codes, likewise

The entries are Deep Compression's relative index (:func:`deepcompression.relative_index`):
entry k sits ``gap_k + 1`` positions after entry k-1 (the first at ``gap_0``) in the
OIHW-flattened weight; a run of more than 15 zeros is bridged by fillers (code 0, gap 15).
The file ends exactly after the last layer.  Codes are canonical (:mod:`._huffman`); a
table must be complete (its lengths' Kraft sum is 1) or a single symbol of length 1.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..spec import Variant
from . import _huffman as H
from ._io import atomic_write
from .canonical import Weights, has_architecture, meta_variant, string_meta
from .deepcompression import Layer, relative_index, tensors_of

NAME = "dcz"
MAGIC = b"\x89DCZ"
VERSION = 1
MAX_META = 65536
GAPS = 16
MAX_FILE = 64 << 20  # far above any SqueezeNet's (checked before reading)


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = blob, 0

    def take(self, size: int, what: str) -> bytes:
        if size > len(self.blob) - self.pos:
            raise WeightsError(f"file ends inside {what} (needs {size} bytes at offset "
                               f"{self.pos}, {len(self.blob) - self.pos} left)")
        self.pos += size
        return self.blob[self.pos - size:self.pos]

    def number(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count, what), dtype).copy()


def read(path, *, variant: Variant | None = None) -> Weights:
    size = os.path.getsize(path)
    if size > MAX_FILE:
        raise WeightsError(f"file is {size} bytes; a .dcz of SqueezeNet has far fewer "
                           f"(at most {MAX_FILE} read)")
    with open(path, "rb") as f:
        return decode(f.read(MAX_FILE + 1), variant=variant)


def parse(blob: bytes, *, variant: Variant | None = None) -> tuple[dict, int, list[Layer]]:
    """``(meta, bits, layers)`` of a ``.dcz`` file: the stored entries, Huffman-decoded."""
    r = _Reader(bytes(blob))
    if r.take(4, "the magic number") != MAGIC:
        raise WeightsError(f"not a .dcz file (its first bytes are not {MAGIC!r})")
    version, bits, maxlen, reserved = struct.unpack("<4B", r.take(4, "the header"))
    if version != VERSION:
        raise WeightsError(f"format version {version}; this reader knows version {VERSION}")
    if not 2 <= bits <= 8:
        raise WeightsError(f"codebook bits {bits}, expected 2 to 8")
    if not 1 <= maxlen <= H.MAX_LENGTH:
        raise WeightsError(f"maximum code length {maxlen}, expected 1 to {H.MAX_LENGTH}")
    if reserved:
        raise WeightsError(f"reserved header byte is {reserved}, expected 0")
    metalen = r.number("I", "the metadata length")
    if metalen > MAX_META:
        raise WeightsError(f"metadata of {metalen} bytes, more than {MAX_META}")
    meta = string_meta(r.take(metalen, "the metadata"), "metadata")
    if variant is not None and not has_architecture(meta):
        meta = {**meta, **variant.to_meta()}
    found = meta_variant(meta)
    if variant is not None and found != variant:
        raise WeightsError(f"holds {found.id}, not the {variant.id} asked for")
    convs = list(found.convs())
    count = r.number("H", "the layer count")
    if count != len(convs):
        raise WeightsError(f"{count} layers; {found.id} has {len(convs)}")
    layers = []
    for conv in convs:
        size = math.prod(conv.weight_shape)
        where = f"layer {conv.name}"
        n = r.number("I", f"{where}'s entry count")
        if n > size:
            raise WeightsError(f"{where}: {n} stored entries, more than its {size} weights "
                               f"of shape {list(conv.weight_shape)}")
        codebook = r.array("<f4", 1 << bits, f"{where}'s codebook").astype(np.float32)
        bias = r.array("<f4", conv.out_channels, f"{where}'s bias").astype(np.float32)
        for what, arr in (("codebook", codebook), ("bias", bias)):
            if not np.isfinite(arr).all():
                raise WeightsError(f"{where}: {int((~np.isfinite(arr)).sum())} non-finite "
                                   f"{what} values")
        if codebook[0] != 0:
            raise WeightsError(f"{where}: codebook entry 0 is {float(codebook[0])!r}, not 0.0")
        codelens = r.array("u1", 1 << bits, f"{where}'s code lengths")
        gaplens = r.array("u1", GAPS, f"{where}'s gap lengths")
        H.check(codelens, maxlen, f"{where}'s code table")
        H.check(gaplens, maxlen, f"{where}'s gap table")
        streams = []
        for what in ("code", "gap"):
            length = r.number("I", f"{where}'s {what} stream length")
            if length > (n * maxlen + 7) // 8:
                raise WeightsError(f"{where}: {what} stream of {length} bytes, more than "
                                   f"{n} codes of at most {maxlen} bits take")
            streams.append(r.take(length, f"{where}'s {what} stream"))
        codes = H.decode(streams[0], n, codelens, f"{where}'s code stream")
        gaps = H.decode(streams[1], n, gaplens, f"{where}'s gap stream")
        positions = np.cumsum(gaps + 1) - 1
        if n and positions[-1] >= size:
            first = int(np.argmax(positions >= size))
            raise WeightsError(f"{where}: entry {first} of {n} lands at flat position "
                               f"{int(positions[first])}, past the end of its {size} weights")
        layers.append(Layer(conv.name, codebook, bias, codes.astype(np.uint8),
                            gaps.astype(np.uint8)))
    if r.pos != len(r.blob):
        raise WeightsError(f"{len(r.blob) - r.pos} bytes after the last layer")
    return meta, bits, layers


def decode(blob: bytes, *, variant: Variant | None = None) -> Weights:
    meta, _, layers = parse(blob, variant=variant)
    return Weights(tensors_of(meta_variant(meta), layers), meta)


def pack(meta: dict, bits: int, layers: list[Layer], max_length: int = H.MAX_LENGTH) -> bytes:
    """The ``.dcz`` bytes of ``layers`` (spec order) with ``bits``-bit codebooks."""
    return assemble(meta, bits, [pack_layer(layer, bits, max_length) for layer in layers],
                    max_length)


def assemble(meta: dict, bits: int, layer_blobs: list[bytes],
             max_length: int = H.MAX_LENGTH) -> bytes:
    """The ``.dcz`` bytes around layers already packed by :func:`pack_layer`."""
    text = json.dumps(dict(meta), sort_keys=True, ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<4BI", VERSION, bits, max_length, 0, len(text)), text,
                     struct.pack("<H", len(layer_blobs)), *layer_blobs])


def pack_layer(layer: Layer, bits: int, max_length: int = H.MAX_LENGTH) -> bytes:
    """One layer's bytes in a ``.dcz`` file (its Huffman tables built from its counts)."""
    codelens = H.lengths_for(np.bincount(layer.codes, minlength=1 << bits), max_length)
    gaplens = H.lengths_for(np.bincount(layer.gaps, minlength=GAPS), max_length)
    code_stream = H.encode(layer.codes, codelens)
    gap_stream = H.encode(layer.gaps, gaplens)
    return b"".join([struct.pack("<I", len(layer.codes)),
                     np.asarray(layer.codebook, "<f4").tobytes(),
                     np.asarray(layer.bias, "<f4").tobytes(), codelens.tobytes(),
                     gaplens.tobytes(), struct.pack("<I", len(code_stream)), code_stream,
                     struct.pack("<I", len(gap_stream)), gap_stream])


def lossless_layers(weights: Weights) -> tuple[int, list[Layer]]:
    """``(bits, layers)`` holding ``weights`` exactly: each layer's distinct non-zero values
    (by bit pattern) become its codebook, sorted; ``bits`` is the fewest (2 to 8) that every
    layer's codebook fits.  :class:`WeightsError` where a layer has more than 255."""
    found = []
    for conv in weights.variant.convs():
        flat = np.ascontiguousarray(weights[f"{conv.name}.weight"], "<f4").reshape(-1)
        pattern = flat.view("<u4")
        values = np.unique(pattern[pattern != 0])
        if len(values) > 255:
            raise WeightsError(
                f"{conv.name}.weight has {len(values)} distinct non-zero values; a .dcz "
                "codebook holds at most 255 besides 0.0, so these weights are not stored "
                "as they are (compress them: tools/compress)")
        codes = np.zeros(len(flat), np.uint8)
        codes[pattern != 0] = np.searchsorted(values, pattern[pattern != 0]) + 1
        found.append((conv, values, codes))
    bits = max(2, max(int(len(v)).bit_length() for _, v, _ in found))
    layers = []
    for conv, values, codes in found:
        codebook = np.zeros(1 << bits, "<u4")
        codebook[1:len(values) + 1] = values
        layers.append(Layer(conv.name, codebook.view("<f4"),
                            np.asarray(weights[f"{conv.name}.bias"], np.float32),
                            *relative_index(codes)))
    return bits, layers


def encode(weights: Weights) -> bytes:
    bits, layers = lossless_layers(weights)
    return pack(weights.meta, bits, layers)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write ``weights`` exactly (:func:`lossless_layers`; ``tools/compress`` writes
    compressed ones)."""
    return [atomic_write(path, encode(weights), overwrite=overwrite)]
