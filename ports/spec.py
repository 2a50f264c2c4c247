"""SqueezeNet as data.

The oracle of every port's structure: each port's network (written out as SqueezeNet in
``ports/<framework>/network.py``, numbers from the tables here by name) is tested, for all 12
variants, against the parameter names, shapes and map sizes here.
This module imports nothing but the standard library.

Layout conventions used throughout the project:

* activations are NCHW ``[N, C, H, W]``;
* convolution weights are OIHW ``[out_channels, in_channels, kernel_h, kernel_w]``;
* biases are ``[out_channels]``.

A network is described by a :class:`Variant` (``version``, ``num_classes``,
``final_conv_padding``, ``bypass``).  ``Variant.layers()`` is the ordered list of
operations, ``Variant.params()`` the canonical parameter names with their OIHW shapes.

Example::

    >>> v = Variant("1_0")
    >>> v.num_params()
    1248424
    >>> v.params()["fire2.squeeze.weight"]
    (16, 96, 1, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Union

VERSIONS = ("1_0", "1_1")
BYPASSES = ("none", "simple", "complex")
FINAL_CONV_PADDINGS = (0, 1)

# --- the architecture table ---------------------------------------------------------------
# (squeeze, expand1x1, expand3x3) filters of fire2 .. fire9, identical in both versions.
FIRE_FILTERS = {
    2: (16, 64, 64),
    3: (16, 64, 64),
    4: (32, 128, 128),
    5: (32, 128, 128),
    6: (48, 192, 192),
    7: (48, 192, 192),
    8: (64, 256, 256),
    9: (64, 256, 256),
}

# conv1 (filters, kernel, stride) and the fire modules each max-pool follows.
STEM = {"1_0": (96, 7, 2), "1_1": (64, 3, 2)}
POOL_AFTER = {"1_0": ("conv1", "fire4", "fire8"), "1_1": ("conv1", "fire3", "fire5")}

# Paper section 6: identity bypass where in/out channels match, 1x1 conv where they do not.
SIMPLE_BYPASS = (3, 5, 7, 9)
COMPLEX_BYPASS = (2, 4, 6, 8)

POOL_KERNEL, POOL_STRIDE = 3, 2
DROPOUT = 0.5


# --- operations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Conv:
    """2-D convolution with bias. ``weight``: [out, in, k, k]; ``bias``: [out]."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, self.kernel, self.kernel)

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel) // self.stride + 1


@dataclass(frozen=True)
class ReLU:
    """``max(x, 0)`` of the convolution ``of`` (whose activation it names in a trace)."""

    name: str
    of: str = ""


@dataclass(frozen=True)
class MaxPool:
    """Max pooling, ``kernel`` x ``kernel``, ``stride``, no padding, output size rounded **up**
    (Caffe / ``ceil_mode=True``): ``ceil((size - kernel) / stride) + 1``."""

    name: str
    kernel: int = POOL_KERNEL
    stride: int = POOL_STRIDE
    ceil_mode: bool = True

    def out_size(self, size: int) -> int:
        rounding = math.ceil if self.ceil_mode else math.floor
        out = rounding((size - self.kernel) / self.stride) + 1
        # A window must start inside the input (Caffe and PyTorch both clip this case).
        if (out - 1) * self.stride >= size:
            out -= 1
        return out

    def ceil_extra(self, size: int) -> int:
        """Rows/columns to add at the bottom/right so a floor-mode pool gives the ceil size."""
        return (self.out_size(size) - 1) * self.stride + self.kernel - size


@dataclass(frozen=True)
class Fire:
    """Fire module: ``squeeze`` 1x1 + ReLU, then ``expand1x1`` (1x1) and ``expand3x3``
    (3x3, padding 1), each + ReLU, concatenated along channels, expand1x1 **first**.

    ``bypass``: ``None``; ``"identity"`` (output += input, no ReLU after the sum); or
    ``"conv"`` (output += ``bypass`` 1x1 conv of the input, no ReLU on either).
    """

    name: str
    in_channels: int
    squeeze: Conv
    expand1x1: Conv
    expand3x3: Conv
    bypass: Union[str, None] = None
    bypass_conv: Union[Conv, None] = None

    @property
    def out_channels(self) -> int:
        return self.expand1x1.out_channels + self.expand3x3.out_channels

    def convs(self) -> tuple[Conv, ...]:
        extra = (self.bypass_conv,) if self.bypass_conv is not None else ()
        return (self.squeeze, self.expand1x1, self.expand3x3) + extra


@dataclass(frozen=True)
class Dropout:
    """Identity at inference."""

    name: str
    rate: float = DROPOUT


@dataclass(frozen=True)
class GlobalAvgPool:
    """Mean over H and W: ``[N, C, H, W] -> [N, C]``."""

    name: str


Layer = Union[Conv, ReLU, MaxPool, Fire, Dropout, GlobalAvgPool]


def bypass_of(n: int, bypass: str) -> Union[str, None]:
    """The bypass of fire ``n`` in a network with ``bypass`` (``Variant.bypass``): None,
    ``"identity"`` or ``"conv"`` (paper section 6)."""
    if bypass in ("simple", "complex") and n in SIMPLE_BYPASS:
        return "identity"
    if bypass == "complex" and n in COMPLEX_BYPASS:
        return "conv"
    return None


def _fire(n: int, in_channels: int, bypass: str) -> Fire:
    s, e1, e3 = FIRE_FILTERS[n]
    name = f"fire{n}"
    kind = bypass_of(n, bypass)
    conv = Conv(f"{name}.bypass", in_channels, e1 + e3, 1) if kind == "conv" else None
    return Fire(
        name,
        in_channels,
        squeeze=Conv(f"{name}.squeeze", in_channels, s, 1),
        expand1x1=Conv(f"{name}.expand1x1", s, e1, 1),
        expand3x3=Conv(f"{name}.expand3x3", s, e3, 3, padding=1),
        bypass=kind,
        bypass_conv=conv,
    )


# --- the variant ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One concrete SqueezeNet.

    version: ``"1_0"`` (conv1 96x7x7) or ``"1_1"`` (conv1 64x3x3, earlier pooling).
    num_classes: filters of conv10.
    final_conv_padding: padding of the 1x1 conv10; Caffe's v1.0 uses 1, everyone else 0.
    bypass: ``"none"``, ``"simple"`` or ``"complex"`` (paper section 6).
    """

    version: str = "1_1"
    num_classes: int = 1000
    final_conv_padding: int = 0
    bypass: str = "none"

    def __post_init__(self) -> None:
        version = str(self.version).replace(".", "_")
        object.__setattr__(self, "version", version)
        if version not in VERSIONS:
            raise ValueError(f"version: expected one of {VERSIONS}, got {self.version!r}")
        if self.bypass not in BYPASSES:
            raise ValueError(f"bypass: expected one of {BYPASSES}, got {self.bypass!r}")
        if self.final_conv_padding not in FINAL_CONV_PADDINGS:
            raise ValueError(
                f"final_conv_padding: expected 0 or 1, got {self.final_conv_padding!r}"
            )
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) \
                or not 1 <= self.num_classes <= 1_000_000:
            raise ValueError(
                f"num_classes: expected an int in 1..1000000, got {self.num_classes!r}")

    # -- identity ------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Short stable identifier, e.g. ``"1_0-p1-none"`` (num_classes appended if not 1000)."""
        base = f"{self.version}-p{self.final_conv_padding}-{self.bypass}"
        return base if self.num_classes == 1000 else f"{base}-c{self.num_classes}"

    @classmethod
    def from_id(cls, ident: str) -> Variant:
        parts = ident.split("-")
        if len(parts) not in (3, 4) or not parts[1].startswith("p"):
            raise ValueError(f"variant id: expected 'VERSION-pPAD-BYPASS[-cN]', got {ident!r}")
        classes = int(parts[3][1:]) if len(parts) == 4 else 1000
        return cls(parts[0], classes, int(parts[1][1:]), parts[2])

    def to_meta(self) -> dict[str, str]:
        """The architecture fields of canonical metadata, as strings."""
        return {
            "variant": self.version,
            "num_classes": str(self.num_classes),
            "final_conv_padding": str(self.final_conv_padding),
            "bypass": self.bypass,
        }

    @classmethod
    def from_meta(cls, meta: dict) -> Variant:
        try:
            return cls(
                str(meta["variant"]),
                int(meta["num_classes"]),
                int(meta["final_conv_padding"]),
                str(meta["bypass"]),
            )
        except KeyError as e:
            raise ValueError(f"metadata lacks the architecture field {e.args[0]!r}") from None

    # -- structure -----------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        """The ordered operations, input to logits."""
        filters, kernel, stride = STEM[self.version]
        pools = POOL_AFTER[self.version]
        out: list[Layer] = [Conv("conv1", 3, filters, kernel, stride), ReLU("relu1", "conv1")]
        channels = filters
        if "conv1" in pools:
            out.append(MaxPool("pool1"))
        for n in range(2, 10):
            fire = _fire(n, channels, self.bypass)
            out.append(fire)
            channels = fire.out_channels
            if fire.name in pools:
                out.append(MaxPool(f"pool{n}"))
        out += [
            Dropout("drop9"),
            Conv("conv10", channels, self.num_classes, 1, padding=self.final_conv_padding),
            ReLU("relu10", "conv10"),
            GlobalAvgPool("pool10"),
        ]
        return out

    def convs(self) -> Iterator[Conv]:
        """Every convolution in order (fire internals: squeeze, expand1x1, expand3x3, bypass)."""
        for layer in self.layers():
            if isinstance(layer, Conv):
                yield layer
            elif isinstance(layer, Fire):
                yield from layer.convs()

    def activation_names(self) -> list[str]:
        """The named outputs a layer trace compares, input to logits, identical in every port:

        ``conv1`` (after its ReLU), each pool, and per Fire ``fireN.squeeze``,
        ``fireN.expand1x1``, ``fireN.expand3x3`` (each after its ReLU), ``fireN.bypass`` (the
        1x1 conv of a complex bypass, no ReLU) and ``fireN`` (the module's output: the
        concatenation plus any bypass); then ``conv10`` (after its ReLU), ``pool10`` (the
        global average, ``[N, C]``) and ``logits`` (what ``predict`` returns, the same
        values).  Activations are NCHW, ``[N, C]`` after the global pool.  Dropout is the
        identity at inference and has no entry."""
        out: list[str] = []
        for layer in self.layers():
            if isinstance(layer, ReLU):
                out.append(layer.of)
            elif isinstance(layer, MaxPool):
                out.append(layer.name)
            elif isinstance(layer, Fire):
                out += [c.name for c in layer.convs()] + [layer.name]
            elif isinstance(layer, GlobalAvgPool):
                out += [layer.name, "logits"]
        return out

    def fires(self) -> list[Fire]:
        return [layer for layer in self.layers() if isinstance(layer, Fire)]

    def params(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter name -> shape (weights OIHW, biases [O]), in layer order."""
        out: dict[str, tuple[int, ...]] = {}
        for conv in self.convs():
            out[f"{conv.name}.weight"] = conv.weight_shape
            out[f"{conv.name}.bias"] = (conv.out_channels,)
        return out

    def num_params(self) -> int:
        return sum(math.prod(shape) for shape in self.params().values())

    # -- geometry and cost ---------------------------------------------------------------
    def feature_sizes(self, size: int) -> dict[str, int]:
        """Spatial side after each layer for a square input of side ``size``."""
        if size < 1:
            raise ValueError(f"input size must be positive, got {size}")
        sizes: dict[str, int] = {}
        for layer in self.layers():
            if isinstance(layer, (Conv, MaxPool)):
                size = layer.out_size(size)
            elif isinstance(layer, GlobalAvgPool):
                size = 1
            if size < 1:
                raise ValueError(f"input too small: {layer.name} would produce an empty map")
            sizes[layer.name] = size
        return sizes

    def macs(self, size: int = 224) -> int:
        """Multiply-accumulates of every convolution for one ``size`` x ``size`` image."""
        total = 0
        for layer in self.layers():
            if isinstance(layer, (Conv, MaxPool)):
                if isinstance(layer, Conv):
                    out = layer.out_size(size)
                    total += math.prod(layer.weight_shape) * out * out
                size = layer.out_size(size)
            elif isinstance(layer, Fire):
                for conv in layer.convs():
                    inner = conv.out_size(size)
                    total += math.prod(conv.weight_shape) * inner * inner
        return total


def all_variants(num_classes: int = 1000) -> list[Variant]:
    """Every version x final_conv_padding x bypass combination."""
    return [
        Variant(v, num_classes, p, b)
        for v in VERSIONS
        for p in FINAL_CONV_PADDINGS
        for b in BYPASSES
    ]


def through_pool(layers: list, n: int) -> int:
    """How many leading ``layers`` there are up to and including the ``n``-th
    :class:`MaxPool` (0 when there are fewer): ``n=2`` is the high-resolution part of the
    network (conv1 to pool3 for v1.1, conv1 to pool4 for v1.0)."""
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, MaxPool)]
    return pools[n - 1] + 1 if len(pools) >= n else 0
