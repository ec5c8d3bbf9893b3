"""The MDM objective: t-sampler + rate + masker + eligibility + control variate, composed by a Method."""

from mdm.objective.batch import MDMBatch
from mdm.objective.method import BENCHMARK_PRESETS, PRESETS, Method
from mdm.objective.objective import ARMObjective, Draws, LossOutput, MDMObjective, model_token_ce

__all__ = ["ARMObjective", "BENCHMARK_PRESETS", "Draws", "LossOutput", "MDMBatch", "MDMObjective", "Method",
           "PRESETS", "model_token_ce"]
