"""The 1000 ImageNet-1k (ILSVRC-2012) class names, in the standard class order.

Class ``i`` is the i-th WordNet id in sorted order, the order used by Caffe, torchvision,
the Gluon and ONNX model zoos, and every SqueezeNet checkpoint in ``weights/manifest.toml``
(285 Egyptian cat, 281 tabby, 282 tiger cat, 967 espresso).

The data file ``weights/imagenet_classes.txt`` has one line per class, ``wnid<TAB>names``,
where names are the synset's lemmas separated by ``", "`` (``n02123045\ttabby, tabby cat``).

    >>> from ports.classes import imagenet_classes
    >>> imagenet_classes()[285]
    'Egyptian cat'
"""

from __future__ import annotations

from functools import cache

from ._data import data_file

FILE_NAME = "imagenet_classes.txt"
NUM_CLASSES = 1000


@cache
def _table() -> tuple[tuple[str, str], ...]:
    path = data_file(FILE_NAME)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        wnid, sep, names = line.partition("\t")
        if not sep or not wnid.startswith("n") or not names.strip():
            raise ValueError(f"{path}:{number}: expected 'wnid<TAB>names', got {line!r}")
        rows.append((wnid, names.strip()))
    if len(rows) != NUM_CLASSES:
        raise ValueError(f"{path}: expected {NUM_CLASSES} classes, found {len(rows)}")
    wnids = [w for w, _ in rows]
    if wnids != sorted(wnids) or len(set(wnids)) != NUM_CLASSES:
        raise ValueError(f"{path}: WordNet ids are not unique and sorted (the class order)")
    return tuple(rows)


def imagenet_classes(full: bool = False) -> list[str]:
    """Class names by index: the first lemma (``'tabby'``), or with ``full=True`` every
    lemma of the synset (``'tabby, tabby cat'``)."""
    return [names if full else names.split(", ")[0] for _, names in _table()]


def imagenet_wnids() -> list[str]:
    """WordNet ids by class index (``'n01440764'`` ... ``'n15075141'``)."""
    return [wnid for wnid, _ in _table()]
