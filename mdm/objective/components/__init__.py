"""Importing this package registers every component (t-samplers, rates, masks, eligibility, control variates)."""

import mdm.variance.adaptive  # noqa: F401  (registers the ppots_adaptive t-sampler)
from mdm.objective.components import control_variates, eligibility, masks, rates, t_samplers  # noqa: F401
