"""torchvision naming: the key table shared by the PyTorch port and the ``.pth`` codec.

torchvision's ``SqueezeNet`` is ``features`` (conv1, ReLU, pools and fires, in order) then
``classifier`` (Dropout, conv10, ReLU, AdaptiveAvgPool).  A module's key is its position in
its ``nn.Sequential``: e.g. v1.0 ``fire2.squeeze.weight`` is ``features.3.squeeze.weight``
and ``conv10.weight`` is ``classifier.1.weight``.  A complex-bypass conv is
``features.K.bypass.weight`` (no torchvision equivalent).
"""

from __future__ import annotations

from .. import spec as S
from ..spec import Variant

NAME = "torch"
EXTENSIONS = (".pth", ".pt")


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
