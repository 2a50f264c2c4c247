"""PyTorch port: goldens, fixtures, and torchvision compatibility."""



import torch  # noqa: F401  (the torch environment runs this module)

from conformance.suite import PortSuite  # noqa: E402


class TestTorch(PortSuite):
    port = "torch"
