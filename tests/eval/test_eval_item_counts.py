"""HiTab: the number of test items scored is recorded beside the paper's 1,412 (issue 28, item 5)."""

from __future__ import annotations

import json

import pytest

from mdm.data.tasks import TASKS
from mdm.eval.api import evaluate_run
from tests.data.test_data import _sample, _write_hitab
from tests.eval.test_eval_fixtures import save_run, sharp_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hitab_records_its_item_count_beside_the_papers(tmp_path):
    hitab = tmp_path / "hitab"
    _write_hitab(hitab, [_sample(i) for i in range(3)])
    tok = tiny_tokenizer()
    run = save_run(tmp_path / "run", tok, sharp_model(tok), {"task": "hitab", "method": "standard", "seed": 42})
    evaluate_run(run, {"task_options": {"root": str(hitab)}, "gen_length": 8, "steps": 8, "block_length": 8,
                       "likelihood": False})
    record = json.loads((run / "record.json").read_text())
    ev = record["eval"]["hitab"]
    assert ev["n"] == ev["scores"]["n"] == 3 and ev["paper_n"] == TASKS["hitab"].paper_eval_n == 1412
    assert "1,412" in ev["paper_n_note"] and "over 3" in ev["paper_n_note"]
    assert record["metrics"]["eval_n"] == 3 and record["metrics"]["paper_eval_n"] == 1412
    # a task whose paper count is not stated records nothing extra (the tiny stand-ins included)
    assert TASKS["tables"].paper_eval_n is None and TASKS["gsm8k"].paper_eval_n is None
