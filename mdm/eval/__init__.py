"""Evaluation of trained runs: `evaluate_run` (api.py), held-out likelihood (likelihood.py), `mdm eval` (cli.py).

Imports are lazy so that `mdm --help` does not load torch.
"""

from __future__ import annotations

from mdm.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "evaluate_run": "api", "heldout_nll": "likelihood", "mc_loglikelihood": "likelihood",
})  # fmt: skip
