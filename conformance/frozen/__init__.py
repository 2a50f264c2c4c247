"""Weights files frozen before issue 28 rewrote the ports as literal networks: each written
by the port of that time through its framework's own saver, never regenerated.  Each must
still load bit-exact into today's port by that framework's own loader (the name contracts
held) and by ours; the port's test module checks it:

* ``torch-*.pth``: ``torch.save(model.state_dict())`` (torchvision's ``features.N`` keys);
* ``chainer-*.npz``: ``chainer.serializers.save_npz`` (``fire2/squeeze/W``);
* ``keras-*.weights.h5`` and ``keras-*.keras``: ``model.save_weights`` and ``model.save``
  on TensorFlow (Keras' weight paths; the model's config);
* ``flax-*.msgpack``: ``flax.serialization.msgpack_serialize`` of the parameter state;
* ``mxnet-*.params``: Gluon's ``save_parameters`` (the model zoo's names).

The values are :func:`pattern`: distinct per tensor and per position (a transposed or
misplaced tensor shows), and low in entropy (git stores each 4 MB file in ~30 KB).  Files:
``<framework>-<variant id>.<ext>``, for ``1_0-p1-complex-c10`` and ``1_1-p0-complex-c10``
(every kind of key: both versions, conv10's padding, identity and 1x1-conv bypasses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ports.spec import Variant

HERE = Path(__file__).resolve().parent
VARIANTS = ("1_0-p1-complex-c10", "1_1-p0-complex-c10")


def pattern(variant: Variant) -> dict[str, np.ndarray]:
    """``{canonical name: float32 OIHW}``: tensor ``t`` (in ``variant.params()`` order),
    element ``i`` (row-major) holds ``((i % 251) - 125) / 1000 + t / 100``."""
    out = {}
    for t, (name, shape) in enumerate(variant.params().items()):
        i = np.arange(int(np.prod(shape)))
        out[name] = (((i % 251) - 125) / 1000 + t / 100).astype(np.float32).reshape(shape)
    return out


def path(framework: str, vid: str, ext: str) -> Path:
    return HERE / f"{framework}-{vid}.{ext}"
