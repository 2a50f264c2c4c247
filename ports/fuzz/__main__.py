"""``python -m ports.fuzz``: the same as ``tools/fuzz``."""

import sys

from .cli import entry

sys.exit(entry())
