"""Canonical Huffman codes with a maximum length, in NumPy: what the ``.dcz`` codec stores.

A code is given by its **lengths**: ``lengths[s]`` bits for symbol ``s`` (0: the symbol does
not occur).  Codewords are assigned canonically, as DEFLATE does: symbols sorted by (length,
symbol); the first gets all zeros; each next one the previous codeword plus one, shifted
left by the growth in length.  Bits go most significant first, a stream padded with zero
bits to a whole byte.

:func:`lengths_for` builds optimal length-limited lengths from counts (package-merge);
:func:`encode` and :func:`decode` are vectorised: decoding finds every codeword's start by
pointer doubling over the stream's bit positions, so no Python loop runs per symbol.  A
table is *valid* when its lengths fit ``max_length`` and the code is complete (Kraft sum 1),
or it has exactly one symbol, of length 1.
"""

from __future__ import annotations

import numpy as np

from ..errors import WeightsError

MAX_LENGTH = 15   # longest codeword any file may use
_DOUBLINGS = 5    # decode: jump tables for 1, 2, ..., 32 codewords


def lengths_for(counts: np.ndarray, max_length: int) -> np.ndarray:
    """Optimal code lengths (uint8, one per symbol) for ``counts`` with no code longer
    than ``max_length`` (package-merge; ties broken by symbol, so the same counts always
    give the same lengths).  One occurring symbol gets length 1; none, all zeros."""
    counts = np.asarray(counts, np.int64)
    used = [int(s) for s in np.flatnonzero(counts)]
    lengths = np.zeros(len(counts), np.uint8)
    if len(used) == 1:
        lengths[used[0]] = 1
    if len(used) <= 1:
        return lengths
    if len(used) > 1 << max_length:
        raise ValueError(f"{len(used)} symbols cannot have codes of at most {max_length} bits")
    leaves = sorted((int(counts[s]), (s,)) for s in used)
    items = leaves
    for _ in range(max_length - 1):
        packages = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(items[0::2], items[1::2])]
        items = sorted(leaves + packages, key=lambda item: item[0])
    for _, symbols in items[:2 * len(used) - 2]:
        for s in symbols:
            lengths[s] += 1
    return lengths


def check(lengths: np.ndarray, max_length: int, what: str) -> None:
    """:class:`WeightsError` unless ``lengths`` is a valid table (module docstring)."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.max(initial=0) > max_length:
        raise WeightsError(f"{what}: a code of {int(lengths.max())} bits, longer than the "
                           f"file's maximum of {max_length}")
    used = lengths[lengths > 0]
    if len(used) == 1 and used[0] == 1:
        return
    kraft = int(np.sum(np.left_shift(1, max_length - used)))
    if len(used) and kraft != 1 << max_length:
        kind = "over-subscribed" if kraft > 1 << max_length else "incomplete"
        raise WeightsError(f"{what}: impossible Huffman table ({kind}: its code lengths' "
                           f"Kraft sum is {kraft / (1 << max_length):.6g}, not 1)")


def codewords(lengths: np.ndarray) -> np.ndarray:
    """The canonical codeword (int64) of every symbol; 0 where the length is 0."""
    lengths = np.asarray(lengths, np.int64)
    words = np.zeros(len(lengths), np.int64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths).tolist(), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        words[s], previous = code, int(lengths[s])
        code += 1
    return words


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """The codewords of ``symbols`` back to back, most significant bit first, zero-padded to
    a whole byte."""
    symbols = np.asarray(symbols, np.int64)
    sizes = np.asarray(lengths, np.int64)[symbols]
    if (sizes == 0).any():
        raise ValueError("a symbol without a code")
    words = codewords(lengths)[symbols]
    starts = np.cumsum(sizes) - sizes
    bits = np.zeros(int(sizes.sum()), np.uint8)
    for j in range(int(sizes.max(initial=0))):
        has = sizes > j
        bits[starts[has] + j] = (words[has] >> (sizes[has] - 1 - j)) & 1
    return np.packbits(bits).tobytes()


def decode(stream: bytes, n: int, lengths: np.ndarray, what: str) -> np.ndarray:
    """``n`` symbols (int64) from ``stream``, which must end with the last codeword's byte,
    padded with zero bits.  ``lengths`` must be valid (:func:`check`)."""
    lengths = np.asarray(lengths, np.int64)
    if n == 0:
        if stream:
            raise WeightsError(f"{what}: {len(stream)} bytes for no entries")
        return np.zeros(0, np.int64)
    if not stream:
        raise WeightsError(f"{what}: empty, for {n} entries")
    width = int(lengths.max(initial=1))  # the longest code this table has
    if width > MAX_LENGTH:
        raise WeightsError(f"{what}: a code of {width} bits, longer than {MAX_LENGTH}")
    table_symbol = np.full(1 << width, -1, np.int64)
    table_length = np.zeros(1 << width, np.int32)
    words = codewords(lengths)
    for s in np.flatnonzero(lengths).tolist():
        shift = width - int(lengths[s])
        table_symbol[words[s] << shift:(words[s] + 1) << shift] = s
        table_length[words[s] << shift:(words[s] + 1) << shift] = lengths[s]
    data = np.frombuffer(stream, np.uint8)
    size = 8 * len(data)
    # the 24 bits from each byte on; a code (<= 15 bits) starting at any of its 8 bits fits
    wide = np.concatenate([data, np.zeros(2, np.uint8)]).astype(np.int32)
    word = (wide[:-2] << 16) | (wide[1:-1] << 8) | wide[2:]
    at = np.arange(size, dtype=np.int32)
    window = (word[at >> 3] >> (24 - width - (at & 7))) & ((1 << width) - 1)
    step = table_length[window]
    # positions 0..size-1 are bits; size is the exact end; size + 1 means "ran past it"
    jump = np.minimum(at.astype(np.int64) + np.where(step > 0, step, size + 1), size + 1)
    jump = np.concatenate([jump, [size + 1, size + 1]]).astype(np.int32)
    jumps = [jump]
    for _ in range(_DOUBLINGS):
        jumps.append(jumps[-1][jumps[-1]])
    block = 1 << _DOUBLINGS
    anchors = [0]
    while len(anchors) * block <= n and anchors[-1] <= size:
        anchors.append(int(jumps[-1][anchors[-1]]))
    if len(anchors) * block <= n:
        raise WeightsError(f"{what}: the stream of {len(stream)} bytes ends before its {n} "
                           "entries do")
    starts = np.full(len(anchors) * block, size + 1, np.int64)
    starts[::block] = anchors
    for k in range(_DOUBLINGS - 1, -1, -1):
        starts[1 << k::2 << k] = jumps[k][starts[0::2 << k]]
    starts = starts[:n + 1]
    if starts[n] > size:
        raise WeightsError(f"{what}: the stream of {len(stream)} bytes ends before its {n} "
                           "entries do")
    tail = size - int(starts[n])
    if tail >= 8 or (tail and int(data[-1]) & ((1 << tail) - 1)):
        raise WeightsError(f"{what}: {size - int(starts[n])} bits after the last of its {n} "
                           "entries, which must be fewer than 8 and zero")
    return table_symbol[window[starts[:n]]]
