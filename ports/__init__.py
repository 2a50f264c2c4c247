"""squeezenet-ports: one SqueezeNet, proven identical across frameworks.

Framework ports live in subpackages (``ports.numpy``, ``ports.torch``, ``ports.keras``,
``ports.flax``, ``ports.mxnet``, ``ports.chainer``) and are imported on demand, so
``import ports`` never imports a deep-learning framework.
"""

from .spec import Variant  # noqa: F401

__version__ = "0.1.0"
