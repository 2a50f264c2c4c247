"""``python -m devtools.bench``: see :mod:`devtools.bench`."""

import sys

from . import main

sys.exit(main())
