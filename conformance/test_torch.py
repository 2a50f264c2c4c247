"""PyTorch port: goldens, fixtures, and torchvision compatibility."""

import numpy as np


import torch  # noqa: F401  (the torch environment runs this module)

from conformance.suite import PortSuite  # noqa: E402
from ports.formats.torch import key_table  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant, all_variants  # noqa: E402


class TestTorch(PortSuite):
    port = "torch"
