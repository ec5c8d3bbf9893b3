"""mdm: stable training of masked diffusion language models."""

from mdm.compat.torchvision_shim import install as _install_torchvision_shim

_install_torchvision_shim()

__version__ = "0.1.0"
