"""The old name of :mod:`ports.formats.canonical` (canonical weights moved into the
converter's room): ``import ports.canonical`` gives that very module, so code written
against the old path keeps working and sees the same ``Weights`` type."""

import sys

from .formats import canonical

sys.modules[__name__] = canonical
