"""Importing this package registers every component (t-samplers, rates, masks, eligibility, control variates)."""

from mdm.objective.components import control_variates, eligibility, masks, rates, t_samplers  # noqa: F401
