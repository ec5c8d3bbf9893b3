"""Importing this package registers every component (t-samplers, rates, masks, eligibility, control variates)."""

from mdm.objective.components import control_variates, eligibility, masks, rates, t_samplers  # noqa: F401
from mdm.registry import T_SAMPLERS

# adaptive P-POTS refits the EPR density during training (scipy): registered when first asked for by name
T_SAMPLERS.register_lazy("ppots_adaptive", "mdm.variance.adaptive")
