"""Keras model configs: written for the two forms of our ``.keras`` files, read for what a
SqueezeNet reader needs to know (which layers, which variant, how each max pool rounds).

Two forms of model, both with the layer names of ``ports.keras``
(:func:`ports.formats.keras.keras_layers`), chosen per variant by :func:`needs_ports`:

* **built-in**: a Keras ``Functional`` model of built-in layers only, which
  ``keras.saving.load_model`` opens without this package.  Ceil-mode pooling is a
  ``ZeroPadding2D(((0, s - 1), (0, s - 1)))`` (named ``poolN_pad``) then a ``valid``
  ``MaxPooling2D``: the same windows as Caffe's, and the padded zeros never win because
  every pool input is >= 0 (it follows a ReLU, or a simple bypass sum of two ReLU outputs).
  The head is Keras' ``GlobalAveragePooling2D``: our files hold float32 models, where its
  mean differs from a sum over the count by float32 rounding only (about 1e-7 relative).
  In float64 it is not exact (Keras 3.15 computes a float64 mean in float32 on JAX and
  PyTorch), which is why ``ports.keras`` itself uses ``ExactGlobalAveragePooling2D``.
* **ports.keras**: for a complex bypass, whose 1x1 bypass convolutions are not followed by a
  ReLU, so the pools after a bypass sum see negative values and zero padding is not ceil
  mode; no built-in Keras pool pads with -inf.  The config is what Keras 3.15.1's
  ``model.save("x.keras")`` writes for a ``ports.keras.SqueezeNet``: its constructor
  arguments under the registered name ``squeezenet_ports>SqueezeNet``, so **``import
  ports.keras`` must run before ``keras.saving.load_model``**, which then returns a
  ``ports.keras.SqueezeNet``.

:func:`read_config` interprets a config: ours, one Keras saved from a ``ports.keras`` model
or from any functional model with those layer names, and (for pooling only) the Keras 2
``model_config`` of a whole-model ``.h5``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from . import canonical as C
from .keras import KerasLayer, keras_layers, layer_name, model_name

KERAS_VERSION = "3.15.1"       # the release whose files these reproduce (conformance tests)
PORTS_CLASS = "squeezenet_ports>SqueezeNet"
MAX_CONFIG = 16 << 20          # bytes of JSON text
MAX_CONFIG_LAYERS = 10_000
MAX_DEPTH = 64                 # nesting walked in a layer's inbound nodes
BUILTIN_KINDS = {"input_layer", "conv2d", "re_lu", "activation", "zero_padding2d",
                 "max_pooling2d", "concatenate", "add", "dropout", "global_average_pooling2d"}
PORTS_KINDS = {"ceil_max_pooling2d", "exact_global_average_pooling2d"}
IMPORT_NOTE = "needs `import ports.keras` before keras.saving.load_model"
# What a SqueezeNet is made of: the layer classes a config may name (Keras 3 and Keras 2
# spellings; Softmax and Flatten for heads that end in them), and ports.keras's own.
LAYER_CLASSES = {"InputLayer", "Conv2D", "Convolution2D", "ReLU", "Activation",
                 "ZeroPadding2D", "MaxPooling2D", "MaxPool2D", "Concatenate", "Add", "Dropout",
                 "GlobalAveragePooling2D", "GlobalAvgPool2D", "Softmax", "Flatten",
                 "CeilMaxPooling2D", "ExactGlobalAveragePooling2D"}
OUR_PACKAGE = "squeezenet_ports"   # registered names "squeezenet_ports>Class"
CODE_CLASSES = {"Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda", "function"}
MAX_NODES = 1_000_000            # JSON values walked by :func:`refuse_foreign`
FOREIGN = ("a SqueezeNet is made of Keras's built-in layers and ports.keras's only; nothing "
           "a model config names is imported or run")


def needs_ports(variant: Variant) -> bool:
    """Whether ``variant``'s model needs ``ports.keras`` (a complex bypass: see the module
    docstring); every other variant is written with built-in layers only."""
    return variant.bypass == "complex"


def to_snake_case(name: str) -> str:
    """Keras' own ``to_snake_case`` (``GlobalAveragePooling2D`` ->
    ``global_average_pooling2d``): a layer's group in a ``.weights.h5`` file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# --- the built-in form ---------------------------------------------------------------------
def builtin_layers(variant: Variant) -> list[KerasLayer]:
    """``model.layers`` of the built-in form: ``ports.keras``'s, with each ceil-mode pool a
    ``ZeroPadding2D`` + ``MaxPooling2D`` pair and Keras' own global average pool."""
    out = []
    for layer in keras_layers(variant):
        if layer.kind == "ceil_max_pooling2d":
            out += [KerasLayer(f"{layer.name}_pad", "zero_padding2d"),
                    KerasLayer(layer.name, "max_pooling2d")]
        elif layer.kind == "exact_global_average_pooling2d":
            out.append(KerasLayer(layer.name, "global_average_pooling2d"))
        else:
            out.append(layer)
    return out


def model_layers(variant: Variant) -> list[KerasLayer]:
    """``model.layers`` of the model our ``.keras`` file holds for ``variant``."""
    return keras_layers(variant) if needs_ports(variant) else builtin_layers(variant)


def _policy(dtype: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype},
            "registered_name": None}


def _tensor(name: str, channels: int, dtype: str) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None, None, None, channels], "dtype": dtype,
                       "keras_history": [name, 0, 0]}}


class _Graph:
    """Builds a ``Functional`` config layer by layer, as Keras serializes one."""

    def __init__(self, dtype: str) -> None:
        self.dtype, self.layers = dtype, []

    def add(self, cls: str, name: str, config: dict, inputs: list[tuple[str, int]], *,
            built: bool = True, kwargs: dict | None = None) -> tuple[str, int]:
        """Layer ``name`` of class ``cls`` on ``inputs`` (``(layer, channels)``; two or more
        form one list argument); returns its output."""
        tensors = [_tensor(n, c, self.dtype) for n, c in inputs]
        shapes = [[None, None, None, c] for _, c in inputs]
        entry = {"module": "keras.layers", "class_name": cls,
                 "config": {"name": name, "trainable": True, "dtype": _policy(self.dtype),
                            **config},
                 "registered_name": None}
        if built:
            entry["build_config"] = {"input_shape": shapes[0] if len(shapes) == 1 else shapes}
        entry["name"] = name
        entry["inbound_nodes"] = [{"args": [tensors[0] if len(tensors) == 1 else tensors],
                                   "kwargs": kwargs or {}}]
        self.layers.append(entry)
        return name, _channels(cls, config, inputs)

    def conv(self, c: S.Conv, x: tuple[str, int], activation: str = "linear"
             ) -> tuple[str, int]:
        name, padding = layer_name(c.name), "valid"
        if c.padding and c.stride == 1 and 2 * c.padding == c.kernel - 1:
            padding = "same"
        elif c.padding:
            x = self.pad(f"{name}_pad", [[c.padding, c.padding], [c.padding, c.padding]], x)
        init = {"module": "keras.initializers", "class_name": "GlorotUniform",
                "config": {"seed": None, "input_axes": None, "output_axes": None},
                "registered_name": None}
        zeros = {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                 "registered_name": None}
        return self.add("Conv2D", name, {
            "filters": c.out_channels, "kernel_size": [c.kernel, c.kernel],
            "strides": [c.stride, c.stride], "padding": padding,
            "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
            "activation": activation, "use_bias": True, "kernel_initializer": init,
            "bias_initializer": zeros, "kernel_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None},
            [x])

    def pad(self, name: str, padding: list, x: tuple[str, int]) -> tuple[str, int]:
        return self.add("ZeroPadding2D", name,
                        {"padding": padding, "data_format": "channels_last"}, [x])


def _channels(cls: str, config: dict, inputs: list[tuple[str, int]]) -> int:
    if cls == "Conv2D":
        return config["filters"]
    if cls == "Concatenate":
        return sum(c for _, c in inputs)
    return inputs[0][1]


def builtin_config(variant: Variant, dtype: str = "float32") -> dict:
    """The ``config.json`` Keras 3.15.1 writes for the built-in form of ``variant`` (the
    conformance tests compare it with ``model.save`` of that model built in real Keras)."""
    g = _Graph(dtype)
    g.layers.append({"module": "keras.layers", "class_name": "InputLayer",
                     "config": {"batch_shape": [None, None, None, 3], "dtype": dtype,
                                "sparse": False, "ragged": False, "name": "input",
                                "optional": False},
                     "registered_name": None, "name": "input", "inbound_nodes": []})
    x = ("input", 3)
    for op in variant.layers():
        if isinstance(op, S.Conv):
            x = g.conv(op, x)
        elif isinstance(op, S.ReLU):
            x = g.add("ReLU", op.name, {"max_value": None, "negative_slope": 0.0,
                                        "threshold": 0.0}, [x], built=False)
        elif isinstance(op, S.MaxPool):
            x = g.pad(f"{op.name}_pad", [[0, op.stride - 1], [0, op.stride - 1]], x)
            x = g.add("MaxPooling2D", op.name, {
                "pool_size": [op.kernel, op.kernel], "padding": "valid",
                "strides": [op.stride, op.stride], "data_format": "channels_last"}, [x],
                built=False)
        elif isinstance(op, S.Fire):
            s = g.conv(op.squeeze, x, "relu")
            out = g.add("Concatenate", f"{op.name}_concat", {"axis": -1},
                        [g.conv(op.expand1x1, s, "relu"), g.conv(op.expand3x3, s, "relu")])
            if op.bypass is not None:
                bypass = x if op.bypass == "identity" else g.conv(op.bypass_conv, x)
                out = g.add("Add", f"{op.name}_add", {}, [out, bypass])
            x = out
        elif isinstance(op, S.Dropout):
            x = g.add("Dropout", op.name, {"rate": op.rate, "seed": None,
                                           "noise_shape": None}, [x], built=False,
                      kwargs={"training": False})
        elif isinstance(op, S.GlobalAvgPool):
            x = g.add("GlobalAveragePooling2D", op.name,
                      {"data_format": "channels_last", "keepdims": False}, [x], built=False)
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {op!r}")
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": model_name(variant), "trainable": True, "layers": g.layers,
                       "input_layers": ["input", 0, 0], "output_layers": [x[0], 0, 0]},
            "registered_name": "Functional", "build_config": {"input_shape": None},
            "compile_config": {}}


def ports_config(variant: Variant, dtype: str = "float32") -> dict:
    """The ``config.json`` Keras 3.15.1 writes for ``ports.keras.SqueezeNet(...)``."""
    return {"module": "ports.keras", "class_name": "SqueezeNet",
            "config": {"version": variant.version, "num_classes": variant.num_classes,
                       "final_conv_padding": variant.final_conv_padding,
                       "bypass": variant.bypass, "dtype": dtype},
            "registered_name": PORTS_CLASS, "build_config": {"input_shape": None},
            "compile_config": {}}


def model_config(variant: Variant) -> dict:
    """The ``config.json`` of our ``.keras`` file for ``variant``."""
    return ports_config(variant) if needs_ports(variant) else builtin_config(variant)


# --- reading a config ----------------------------------------------------------------------
@dataclass
class ConfigLayer:
    """One layer of a functional config: name, class, its config, the layers it reads."""

    name: str
    cls: str
    config: dict
    inbound: list[str]

    @property
    def kind(self) -> str:
        return to_snake_case(self.cls)


@dataclass
class ModelConfig:
    """What a config says: ``variant`` when it proves one (the ``ports.keras`` form names
    it; a functional graph with our layer names shows it), ``layers`` (``model.layers`` as
    ``(name, kind)``, for the weights' paths), the custom classes it needs, and how each max
    pool rounds (:func:`pooling`)."""

    form: str
    variant: Variant | None = None
    layers: list[tuple[str, str]] | None = None
    custom: list[str] = field(default_factory=list)
    pools: dict[str, str] = field(default_factory=dict)
    graph: list[ConfigLayer] = field(default_factory=list)


def parse_json(text: bytes | str, what: str, *, limit: int = MAX_CONFIG) -> Any:
    """JSON text of at most ``limit`` bytes; any problem is a :class:`WeightsError` naming
    ``what``."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > limit:
            raise WeightsError(f"{what} is {len(text)} bytes, more than the {limit} allowed")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{what} is not UTF-8 text") from None
    if len(text) > limit:
        raise WeightsError(f"{what} is longer than {limit} characters")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise WeightsError(f"{what} is not valid JSON: {type(e).__name__}: {e}"[:300]) from None


def _foreign(node: dict) -> str | None:
    """What is foreign in one serialized object (a dict with ``class_name`` or ``module``):
    code (a ``Lambda``, a marshalled function), a module outside Keras and ours, or a class
    registered by another package; else None."""
    cls, module, registered = (node.get(k) for k in ("class_name", "module", "registered_name"))
    if isinstance(cls, str) and cls in CODE_CLASSES:
        return f"a {cls[:60]} (code)"
    if module is not None and not (isinstance(module, str) and (
            module in ("keras", "tf_keras", "ports.keras")
            or module.startswith(("keras.", "tf_keras.")))):
        return f"an object of module {str(module)[:100]!r}"
    if isinstance(registered, str) and ">" in registered \
            and not registered.startswith(OUR_PACKAGE + ">"):
        return f"a custom object {registered[:100]!r}"
    return None


def _label(node: dict) -> str | None:
    """The ``name`` a serialized object gives itself (Keras 3 or Keras 2 style), if any."""
    name = node.get("name")
    if not isinstance(name, str) and isinstance(node.get("config"), dict):
        name = node["config"].get("name")
    return name[:100] if isinstance(name, str) else None


def refuse_foreign(config: Any, what: str) -> None:
    """Refuse a model config that names anything a SqueezeNet is not made of: a layer class
    outside :data:`LAYER_CLASSES`, a ``Lambda`` or any other code, a module outside Keras
    and ``ports.keras``, a custom object of another package.  Both Keras readers (``.keras``
    and the legacy ``.h5``'s ``model_config``) call it first, so they refuse alike, with the
    same message; nothing named is ever imported or unmarshalled."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    for k, entry in enumerate(layers[:MAX_CONFIG_LAYERS] if isinstance(layers, list) else []):
        cls = entry.get("class_name") if isinstance(entry, dict) else None
        if isinstance(cls, str) and cls.split(">")[-1] not in LAYER_CLASSES:
            raise WeightsError(f"{what}: layer {_label(entry) or '#' + str(k)} is a {cls[:100]}: "
                               f"{FOREIGN}")
    stack, seen = [config], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise WeightsError(f"{what}: more than {MAX_NODES} JSON values")
        if isinstance(node, dict):
            problem = _foreign(node)
            if problem is not None:
                label = _label(node)
                raise WeightsError(f"{what}: {label + ' ' if label else ''}holds {problem}: "
                                   f"{FOREIGN}")
            stack += node.values()
        elif isinstance(node, list):
            stack += node


def _names(node: Any, depth: int = 0) -> Iterator[str]:
    """Layer names an inbound node reads: Keras 3 (``keras_history: [name, 0, 0]``) and
    Keras 2 (``[[name, 0, 0, {}], ...]``) alike."""
    if depth > MAX_DEPTH:
        return
    if isinstance(node, dict):
        history = node.get("config", {}).get("keras_history") \
            if isinstance(node.get("config"), dict) else None
        if isinstance(history, list) and history and isinstance(history[0], str):
            yield history[0]
            return
        for value in node.values():
            yield from _names(value, depth + 1)
    elif isinstance(node, list):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            yield node[0]
            return
        for value in node:
            yield from _names(value, depth + 1)


def graph_layers(config: Any, what: str) -> list[ConfigLayer]:
    """The layers of a functional (or sequential) model config, in order."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise WeightsError(f"{what}: no list of layers (config.layers)")
    if len(layers) > MAX_CONFIG_LAYERS:
        raise WeightsError(f"{what}: {len(layers)} layers, more than {MAX_CONFIG_LAYERS}")
    out, seen = [], set()
    for k, entry in enumerate(layers):
        cfg = entry.get("config") if isinstance(entry, dict) else None
        cls = entry.get("class_name") if isinstance(entry, dict) else None
        name = cfg.get("name") if isinstance(cfg, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name = entry["name"]
        if not (isinstance(cls, str) and isinstance(cfg, dict) and isinstance(name, str)):
            raise WeightsError(f"{what}: layer #{k} lacks a class_name, config or name")
        if name in seen:
            raise WeightsError(f"{what}: layer name {name[:100]!r} used twice")
        seen.add(name)
        out.append(ConfigLayer(name, cls, cfg, list(_names(entry.get("inbound_nodes", [])))))
    return out


def _pair(value) -> tuple[int, int] | None:
    """A Keras size argument (``3``, ``[3, 3]``) as a square pair, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value[0], value[1]
    return None


def pooling(graph: list[ConfigLayer]) -> dict[str, str]:
    """Max pool name -> ``"ceil"`` (``CeilMaxPooling2D``), ``"ceil (zero padding)"`` (a
    ``valid`` ``MaxPooling2D`` reading a ``ZeroPadding2D`` of ``((0, s - 1), (0, s - 1))``),
    ``"floor"`` (``valid`` alone: Keras' default) or ``"same"``."""
    by_name = {layer.name: layer for layer in graph}
    out = {}
    for layer in graph:
        if layer.cls in ("CeilMaxPooling2D", "squeezenet_ports>CeilMaxPooling2D"):
            out[layer.name] = "ceil"
        elif layer.cls in ("MaxPooling2D", "MaxPool2D"):
            padding = layer.config.get("padding", "valid")
            strides = _pair(layer.config.get("strides")) or _pair(layer.config.get("pool_size"))
            source = by_name.get(layer.inbound[0]) if len(layer.inbound) == 1 else None
            if padding != "valid":
                out[layer.name] = str(padding)[:20]
            elif (source is not None and source.cls == "ZeroPadding2D" and strides
                  and source.config.get("padding") in ([[0, strides[0] - 1],
                                                        [0, strides[1] - 1]],)):
                out[layer.name] = "ceil (zero padding)"
            else:
                out[layer.name] = "floor"
    return out


def floor_note(variant: Variant, pools: dict[str, str]) -> str | None:
    """What it means that the file's model pooled other than in ceil mode, or None."""
    odd = {name: mode for name, mode in pools.items() if not mode.startswith("ceil")}
    if not odd:
        return None
    agree = [size for size in (224, 227) if _same_grid(variant, size)]
    differ = [size for size in (224, 227) if size not in agree]
    where = "; ".join(filter(None, [
        f"the logits agree at {', '.join(f'{s}x{s}' for s in agree)}" if agree else "",
        f"differ at {', '.join(f'{s}x{s}' for s in differ)}" if differ else ""]))
    floor = [name for name, mode in odd.items() if mode == "floor"]
    other = [f"{name} padding {mode!r}" for name, mode in odd.items() if mode != "floor"]
    how = ", ".join(([f"floor mode ('valid': {', '.join(floor)})"] if floor else []) + other)
    where = f" ({where})" if not other else ""  # 'same' pads: no simple rule
    return (f"its model max-pooled in {how}, not in Caffe's ceil mode, which every port here "
            f"computes: these weights belong to a different network than Caffe's "
            f"SqueezeNet{where}")


def _same_grid(variant: Variant, size: int) -> bool:
    """Whether every max pool of ``variant`` at ``size`` has no partial window (ceil and
    floor mode then pool the same windows)."""
    for layer in variant.layers():
        if isinstance(layer, S.MaxPool) and (size - layer.kernel) % layer.stride:
            return False
        if isinstance(layer, (S.Conv, S.MaxPool)):
            size = layer.out_size(size)
    return True


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_ports_form(config: dict) -> bool:
    """Whether a serialized model is a ``ports.keras.SqueezeNet`` (its arguments, no graph):
    named by ``registered_name`` (``.keras``), or, in a legacy ``.h5`` whole-model file
    (which keeps only ``class_name``), the class name with those arguments."""
    args = config.get("config")
    return config.get("registered_name") == PORTS_CLASS or (
        config.get("class_name") in ("SqueezeNet", PORTS_CLASS) and isinstance(args, dict)
        and (config.get("module") == "ports.keras" or ("version" in args
                                                       and "layers" not in args)))


def read_config(config: Any, what: str = "config.json") -> ModelConfig:
    """Interpret a ``.keras`` file's config: the ``ports.keras`` form, or a functional model
    with ``ports.keras``'s layer names (built-in or custom layers)."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise WeightsError(f"{what} is not a serialized Keras model (no class_name)")
    refuse_foreign(config, what)
    cls = config["class_name"]
    if is_ports_form(config):
        args = config.get("config")
        if not isinstance(args, dict):
            raise WeightsError(f"{what}: {PORTS_CLASS} without its arguments (config)")
        try:
            variant = Variant(args.get("version"), args.get("num_classes"),
                              args.get("final_conv_padding"), args.get("bypass"))
        except (ValueError, TypeError) as e:
            raise WeightsError(f"{what}: {PORTS_CLASS} arguments: {e}"[:300]) from None
        if args.get("dtype", "float32") not in ("float32", "float64", "float16", "bfloat16"):
            raise WeightsError(f"{what}: {PORTS_CLASS} dtype {str(args.get('dtype'))[:40]!r}")
        pools = {layer.name: "ceil" for layer in variant.layers()
                 if isinstance(layer, S.MaxPool)}
        return ModelConfig(PORTS_CLASS, variant, None, [PORTS_CLASS], pools)
    if cls not in ("Functional", "Model", "Sequential"):
        raise WeightsError(f"{what} holds a {cls[:100]!r} model, not one this reader knows "
                           f"({PORTS_CLASS} or a functional model with its layer names)")
    graph = graph_layers(config, what)
    by_name = {layer.name: layer for layer in graph}
    conv1, conv10 = by_name.get("conv1"), by_name.get("conv10")

    def kernel(layer: ConfigLayer | None, inputs: int) -> tuple[int, ...] | None:
        if layer is None:
            return None
        size, filters = _pair(layer.config.get("kernel_size")), _int(layer.config.get("filters"))
        return None if size is None or filters is None else (*size, inputs, filters)

    bypass = ("complex" if "fire2_bypass" in by_name else
              "simple" if "fire3_add" in by_name else "none")
    padding = 1 if "conv10_pad" in by_name else 0
    variant = C.infer_variant(kernel(conv1, 3), kernel(conv10, 512),
                              names=(f"{what} layer conv1", f"{what} layer conv10"),
                              layout="HWIO", bypass=bypass, final_conv_padding=padding)
    convs = set(layer_name(c.name) for c in variant.convs())
    problems = []
    for layer in graph:
        if layer.name in convs:
            if layer.kind != "conv2d":
                problems.append(f"layer {layer.name} is a {layer.cls[:60]}, expected Conv2D")
        elif layer.kind not in BUILTIN_KINDS | PORTS_KINDS:
            problems.append(f"layer {layer.name[:100]} ({layer.cls[:60]}) is not part of "
                            "SqueezeNet")
    missing = sorted(convs - set(by_name))
    if missing:
        problems.append(f"no layer {', '.join(missing[:20])}")
    if problems:
        raise WeightsError(f"{what} does not describe SqueezeNet {variant.id}: "
                           + "; ".join(problems))
    custom = sorted({layer.cls for layer in graph if layer.kind in PORTS_KINDS})
    return ModelConfig("functional", variant, [(layer.name, layer.kind) for layer in graph],
                       custom, pooling(graph), graph)
