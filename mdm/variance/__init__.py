"""Variance profiler and P-POTS fitting (METHODS.md sections 2 and 3).

    estimator  nested Monte Carlo estimator of A (pattern), B (rate), C (data), bootstrap SEs
    pilot      forward passes filling the table l[x0, t, mask] for any method, under a token budget
    gradient   the same decomposition on per-sample gradients (parameter subset, optional projection)
    epr, fit   EPR density, its KL fit, the shared ppots.json artifact
    adaptive   `ppots_adaptive`: P-POTS refitted during training from per-t-bin loss moments
    profile    the decomposition per method and the P-POTS fit on one model (`mdm variance` / `mdm fit-ppots`,
               whose spec and loading are mdm.profiling's: a run's model and data)

Importing this package imports nothing heavy; `mdm.objective.components` registers `ppots_adaptive`.
"""

