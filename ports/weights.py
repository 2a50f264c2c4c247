"""The old name of :mod:`ports.formats.manifest` (the manifest of official checkpoints and
``fetch``, moved into the converter's room): ``import ports.weights`` gives that very
module."""

import sys

from .formats import manifest

sys.modules[__name__] = manifest
