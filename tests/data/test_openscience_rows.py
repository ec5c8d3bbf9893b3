"""OpenScience: training and evaluation select their rows with one token counter, the run's real tokenizer
(`mdm.data.tasks.token_counter`), so the test rows never overlap the training rows (issue 28, item 5)."""

from __future__ import annotations

import pytest

from mdm.data.tasks import approx_tokens, make_task, select_openscience
from mdm.errors import ConfigError
from mdm.eval.api import eval_examples, normalize_settings
from mdm.train.config import DataConfig
from mdm.train.data import load_examples
from tests.eval.test_eval_fixtures import tiny_tokenizer

N_TRAIN, N_EVAL = 8, 6


def stand_in_rows(n: int = 40) -> list[dict]:
    """Rows shaped like nvidia/OpenScienceReasoning-2's: every third one repeats a word the BPE holds as one token
    (7 characters), so ~4 characters per token overcounts it."""
    rows = []
    for i in range(n):
        rows.append({"input": f"Ava has {i} apples." + (" apples" * 60 if i % 3 == 1 else ""),
                     "output": f"So the answer is \\boxed{{{i % 4}}}."})
    return rows


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_train_and_test_rows_are_disjoint_with_the_real_tokenizer(tok):
    rows = stand_in_rows()
    real = [len(tok(r["input"] + r["output"], add_special_tokens=False)["input_ids"]) for r in rows]
    approx = [approx_tokens(r["input"] + r["output"]) for r in rows]
    limit = max(real) + 1  # every row fits the model's count ...
    assert all(approx[i] >= limit for i in range(1, len(rows), 3))  # ... though ~4 characters per token drops some
    options = {"dataset": rows, "n_train": N_TRAIN, "n_eval": N_EVAL, "max_tokens": limit}
    train = load_examples(DataConfig(task="openscience", options=options), tokenizer=tok)  # mdm train's selection
    cfg = normalize_settings({"tasks": ["openscience"], "task_options": options})
    test = eval_examples("openscience", cfg, tok)  # mdm eval's selection
    fits = list(range(len(rows)))
    assert [e["id"] for e in train] == [f"openscience-{i}" for i in fits[:N_TRAIN]]
    assert [e["id"] for e in test] == [f"openscience-{i}" for i in fits[N_TRAIN : N_TRAIN + N_EVAL]]
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    # the defect this guards against: training rows counted at ~4 characters per token overlap these test rows
    old_train = select_openscience(rows, "train", n_train=N_TRAIN, n_eval=N_EVAL, max_tokens=limit,
                                   count_tokens=approx_tokens)
    assert {e["id"] for e in old_train} & {e["id"] for e in test}


def test_no_tokenizer_is_refused():
    with pytest.raises(ConfigError, match="model's tokens"):
        make_task("openscience", "train", dataset=stand_in_rows())
    with pytest.raises(ConfigError, match="model's tokens"):
        load_examples(DataConfig(task="openscience", options={"dataset": stand_in_rows()}))
