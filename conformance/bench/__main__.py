"""``python -m conformance.bench``: see :mod:`conformance.bench`."""

import sys

from . import main

sys.exit(main())
