"""torchvision naming: the key table shared by the PyTorch port and the ``.pth`` codec.

torchvision's ``SqueezeNet`` is ``features`` (conv1, ReLU, pools and fires, in order) then
``classifier`` (Dropout, conv10, ReLU, AdaptiveAvgPool).  A module's key is its position in
its ``nn.Sequential``: e.g. v1.0 ``fire2.squeeze.weight`` is ``features.3.squeeze.weight``
and ``conv10.weight`` is ``classifier.1.weight``.  A complex-bypass conv is
``features.K.bypass.weight`` (no torchvision equivalent).

The ``.pth`` codec needs no torch: :func:`read` opens the zip container ``torch.save``
writes through the restricted unpickler of :mod:`ports.formats._pickle` (only the globals a state
dict needs resolve, nothing from the file is ever run) and accepts a bare state dict or one
nested under ``"state_dict"`` or ``"model"`` (a ``"module."`` prefix, as
``DataParallel`` leaves, is stripped).  :func:`write` emits the records and pickle opcodes
``torch.save`` emits, so ``torch.load(path, weights_only=True)`` returns a plain
``OrderedDict`` of float32 tensors that ``load_state_dict`` takes.

A torchvision checkpoint carries no architecture fields, so :func:`read` infers them from
the shapes: conv1 ``[96,3,7,7]`` is v1.0 and ``[64,3,3,3]`` v1.1, ``num_classes`` is
conv10's filter count, ``features.K.bypass.*`` keys mean the complex bypass, and otherwise
``bypass="none"``, ``final_conv_padding=0`` and torchvision preprocessing, as torchvision
has it.  Files this module writes add one small record, ``NAME/extra/squeezenet.json``
(the canonical metadata), that torch ignores and :func:`read` uses, so a simple-bypass or
padded-conv10 variant survives the round trip.  ``variant=`` overrides both.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from . import _pickle
from ._io import atomic_write
from .canonical import Weights, key_problems, make, meta_variant, string_meta
from .canonical import infer_variant as infer_variant_of

NAME = "torch"


def sequential_groups(variant: Variant) -> dict[str, list[S.Layer]]:
    """``{"features": [...], "classifier": [...]}``: torchvision's split of the layers."""
    layers = variant.layers()
    last_fire = max(i for i, layer in enumerate(layers) if isinstance(layer, S.Fire))
    return {"features": layers[:last_fire + 1], "classifier": layers[last_fire + 1:]}


def key_table(variant: Variant) -> dict[str, str]:
    """Canonical name -> torchvision ``state_dict`` key, for every parameter."""
    table: dict[str, str] = {}
    for group, layers in sequential_groups(variant).items():
        for index, layer in enumerate(layers):
            if isinstance(layer, S.Conv):
                convs = [(layer.name, "")]
            elif isinstance(layer, S.Fire):
                convs = [(c.name, "." + c.name.split(".", 1)[1]) for c in layer.convs()]
            else:
                continue
            for canonical, suffix in convs:
                for p in ("weight", "bias"):
                    table[f"{canonical}.{p}"] = f"{group}.{index}{suffix}.{p}"
    return table


META_RECORD = "extra/squeezenet.json"
NESTED_KEYS = ("state_dict", "model")
CONV1, CONV10 = "features.0.weight", "classifier.1.weight"
FLOAT_STORAGES = ("float32", "float16", "uint16", "float64")  # uint16: bfloat16 bits


def _short(value, limit: int = 80) -> str:
    """``repr`` of a key from the file for a message: cut short, and safe on the deeply
    nested objects a pickle can build (their ``repr`` would overflow the recursion limit)."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if isinstance(value, (int, float, bytes)) and not isinstance(value, bool):
        return repr(value)[:limit]
    return f"<{type(value).__name__}>"


def _state_dict(obj) -> dict:
    """The state dict inside a checkpoint: the object itself or ``obj["state_dict"]`` /
    ``obj["model"]``; keys stripped of a common ``module.`` prefix."""
    if isinstance(obj, dict) and not any(isinstance(v, _pickle.Tensor) for v in obj.values()):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            raise WeightsError("checkpoint holds no tensors at the top level nor a dict under "
                               f"{' or '.join(map(repr, NESTED_KEYS))} (keys: "
                               f"{', '.join(map(_short, list(obj)[:10]))})")
    if not isinstance(obj, dict):
        raise WeightsError(f"checkpoint holds a {type(obj).__name__}, expected a state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, _pickle.Tensor)]
    if bad:
        raise WeightsError("state dict entries that are not tensors: "
                           + ", ".join(map(_short, bad[:10])))
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def infer_variant(shapes: dict[str, tuple]) -> Variant:
    """Variant of a torchvision-named state dict from its tensor shapes (see module doc)."""
    bypass = "complex" if any(re.fullmatch(r"features\.\d+\.bypass\.weight", k)
                              for k in shapes) else "none"
    return infer_variant_of(shapes.get(CONV1), shapes.get(CONV10), names=(CONV1, CONV10),
                            bypass=bypass)


def decode(blob_or_path, *, path=None, variant: Variant | None = None) -> Weights:
    obj, extras = _pickle.load_zip(blob_or_path)
    state = _state_dict(obj)
    meta: dict[str, str] = {}
    if META_RECORD in extras:
        meta = string_meta(extras[META_RECORD], META_RECORD)
    shapes = {k: tuple(v.array.shape) for k, v in state.items()}
    if variant is None:
        variant = (meta_variant(meta, what=META_RECORD) if meta
                   else infer_variant(shapes))
    table = key_table(variant)
    spec = variant.params()
    problems = key_problems(shapes, {key: spec[name] for name, key in table.items()})
    inverse = {v: k for k, v in table.items()}
    problems += [f"{key}: dtype {t.storage_dtype}, expected a float type"
                 for key, t in state.items()
                 if key in inverse and t.storage_dtype not in FLOAT_STORAGES]
    if problems:
        raise WeightsError(f"not a torchvision SqueezeNet {variant.id} state dict: "
                           + "; ".join(problems))
    tensors = _pickle.tensors_to_float32({inverse[k]: v for k, v in state.items()})
    if meta:
        # make()'s own parameter names cannot be metadata keys
        extra = {k: v for k, v in meta.items() if k not in variant.to_meta()
                 and k not in ("tensors", "variant")}
        extra.setdefault("preprocessing", "torchvision")
        extra.setdefault("source", "torch checkpoint")
    else:
        name = os.path.basename(os.fspath(path)) if path is not None else "bytes"
        extra = {"preprocessing": "torchvision", "source": f"torch checkpoint {name}"}
    preprocessing, source = extra.pop("preprocessing"), extra.pop("source")
    return make(tensors, variant, preprocessing=preprocessing, source=source, **extra)


def read(path, *, variant: Variant | None = None) -> Weights:
    """A torch ``.pth`` checkpoint (zip format) -> canonical :class:`Weights`."""
    return decode(path, path=path, variant=variant)


def encode(weights: Weights, archive: str = "archive") -> bytes:
    """The ``.pth`` bytes of ``weights`` (state dict in torchvision key order)."""
    import hashlib
    import io

    variant = weights.variant
    table = key_table(variant)
    arrays = {table[k]: weights.tensors[k] for k in variant.params()}
    pkl, storages = _pickle.dumps_state_dict(arrays)
    meta = json.dumps(dict(sorted(weights.meta.items())), indent=1).encode("utf-8")
    digest = hashlib.sha256(pkl + b"".join(storages)).digest()
    serial = str(int.from_bytes(digest[:16], "little")).zfill(40)[:40]
    buf = io.BytesIO()
    _pickle.write_zip(buf, archive, pkl, storages, {META_RECORD: meta}, serial)
    return buf.getvalue()


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(path).name.split(".")[0]) or "archive"
    return [atomic_write(path, encode(weights, stem), overwrite=overwrite)]
