"""The lm-eval-harness plugin (lm_eval_plugin.py, tasks/): a thin adapter over mdm; the scorers are mdm.eval.scorers."""
