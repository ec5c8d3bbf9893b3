"""Make a torchvision whose C++ extension cannot load importable next to CPU torch.

PyPI's torchvision for torch 2.13 is a CUDA build. On a CPU-only torch its `_C` extension fails
to load, and `torchvision/_meta_registrations.py` then crashes at import time
("operator torchvision::nms does not exist"), which breaks `transformers`, `open_clip` and `timm`.
We only need torchvision's Python parts (transforms, model definitions), so when -- and only when --
the extension fails to load, we declare the missing operator schemas before torchvision's own
module code runs. A working install (GPU, or a matching CPU build) is left untouched.

Installed as a lazy meta-path hook: nothing, not even torch, is imported until torchvision is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_SCHEMAS = [
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width,"
    " int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width,"
    " int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale,"
    " SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels,"
    " SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width)"
    " -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width)"
    " -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale,"
    " SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height,"
    " SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h,"
    " SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups,"
    " SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask,"
    " Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h,"
    " SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask)"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
]

_library = None  # keeps the torch.library.Library alive for the process lifetime


def _extension_loads(package_dir: str) -> bool:
    """True if torchvision's compiled ops are usable (the CUDA wheel's `_C` can load yet register nothing)."""
    # deferred: glob, only once torchvision is imported (this hook loads at every interpreter start)
    import glob

    # deferred: torch, only once torchvision is imported (this hook loads at every interpreter start)
    import torch

    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
        except (OSError, ImportError, RuntimeError):
            return False
    try:
        torch.ops.torchvision.nms  # noqa: B018  (raises if the schema is unknown)
        return True
    except (AttributeError, RuntimeError):
        return False


def declare_missing_ops(package_dir: str) -> bool:
    """Declare torchvision's operator schemas if its extension cannot load. Returns True if it did."""
    global _library
    if _extension_loads(package_dir):
        return False
    # deferred: torch, only once torchvision is imported (this hook loads at every interpreter start)
    import torch

    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
    return True


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, package_dir):
        self.inner, self.package_dir = inner, package_dir

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        declare_missing_ops(self.package_dir)
        self.inner.exec_module(module)


class _Finder(importlib.abc.MetaPathFinder):
    # Stays installed: libraries probe with importlib.util.find_spec("torchvision") before importing.
    _busy = False

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision" or self._busy:
            return None
        self._busy = True  # find the real spec without recursing into ourselves
        try:
            spec = importlib.util.find_spec(name) if name not in sys.modules else None
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            return spec
        spec.loader = _Loader(spec.loader, list(spec.submodule_search_locations)[0])
        return spec


def install() -> None:
    """Register the hook (idempotent; a no-op once torchvision is imported)."""
    if "torchvision" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
