"""Evaluation of trained runs: `evaluate_run` (api.py), held-out likelihood (likelihood.py), `mdm eval` (cli.py).

Imports are lazy so that `mdm --help` does not load torch.
"""

from __future__ import annotations

__all__ = ["evaluate_run", "heldout_elbo", "arm_nll", "mc_loglikelihood"]


def __getattr__(name):
    if name == "evaluate_run":
        from mdm.eval.api import evaluate_run

        return evaluate_run
    if name in ("heldout_elbo", "arm_nll", "mc_loglikelihood"):
        from mdm.eval import likelihood

        return getattr(likelihood, name)
    raise AttributeError(f"module 'mdm.eval' has no attribute {name!r}")
