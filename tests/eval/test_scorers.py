"""Scorers: hand-written cases for each rule of PAPER.md "Scoring"; equality with lm-eval's own gsm8k code."""

import os

import pytest
import yaml

from mdm.eval.scorers import (
    boxed_match,
    extract_boxed,
    gsm8k_authors,
    gsm8k_flexible,
    gsm8k_strict,
    hitab_aggregate,
    hitab_gold_list,
    hitab_score,
)

GOLD = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"

# ---------------------------------------------------------------- GSM8K, authors' rule


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        ("so 18.\n#### 18", GOLD, True),
        ("####18", GOLD, True),  # \s* allows no space
        ("#### +18", GOLD, False),  # "+18" != "18": string equality
        ("#### 18.5", GOLD, True),  # \d+ stops at the dot
        ("#### 17\n#### 18", GOLD, False),  # the first match counts
        ("The answer is 18.", GOLD, False),  # no #### = wrong
        ("", GOLD, False),
        (None, GOLD, False),
        ("#### -3", "#### -3", True),
        ("#### 18", "18", True),  # a bare gold number is read as the number
        ("#### 2,125", "#### 2,125", True),  # faithful quirk: both extract "2"
        ("#### 2125", "#### 2,125", False),
        ("#### 2", "#### 2,125", True),
    ],
)
def test_gsm8k_authors(pred, gold, ok):
    assert gsm8k_authors(pred, gold) is ok


# ---------------------------------------------------------------- GSM8K, lm-eval strict / flexible


@pytest.mark.parametrize(
    "pred, strict, flexible",
    [
        ("#### 18", True, True),
        ("#### 18.", True, True),  # trailing "." ignored
        ("#### $18", False, True),  # strict regex wants a digit right after "#### "
        ("The answer is 18.", False, True),
        ("She makes $18 a day", False, True),  # "$" ignored
        ("#### 18\nQuestion: 5 more", True, False),  # flexible takes the last number
        ("####18", False, True),  # strict needs the space
        ("#### 17", False, False),
        ("", False, False),
    ],
)
def test_gsm8k_strict_flexible(pred, strict, flexible):
    assert gsm8k_strict(pred, GOLD) is strict
    assert gsm8k_flexible(pred, GOLD) is flexible


def test_gsm8k_commas_in_numbers():
    gold = "... = 2125\n#### 2,125"
    assert gsm8k_strict("#### 2125", gold) and gsm8k_strict("#### 2,125", gold)
    assert gsm8k_flexible("so 2,125 dollars", gold)


PREDICTIONS = [
    "#### 18",
    "#### 18.",
    "#### 18.0",
    "#### $18",
    "#### 1,8",
    "####18",
    "#### -18",
    "The answer is 18",
    "The answer is $18.",
    "She makes 9 * 2 = 18 dollars.\n#### 18\nQuestion: what about 7?",
    "18 and then 19",
    "It is 18.5",
    "no digits at all",
    "",
    "#### 17\n#### 18",
    "Final: 18.",
    "#### 18 dollars",
    "total -18",
    "value .18",
    "#### 2,125",
    "#### 2125",
    "answer: 2,125.",
]
GOLDS = [GOLD, "She makes it.\n#### 2,125", "#### -18", "18"]


def _lm_eval_scores(preds, gold):
    """lm-eval's own gsm8k pipeline (filters from the installed yaml, then its exact_match)."""
    import lm_eval
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    cfg = yaml.safe_load(open(os.path.join(os.path.dirname(lm_eval.__file__), "tasks/gsm8k/gsm8k.yaml")))
    metric = dict(cfg["metric_list"][0])
    assert metric.pop("metric") == "exact_match"
    kwargs = {k: v for k, v in metric.items() if k not in ("aggregation", "higher_is_better")}
    out = {}
    for flt in cfg["filter_list"]:
        regex = next(f for f in flt["filter"] if f["function"] == "regex")
        options = {k: v for k, v in regex.items() if k != "function"}
        filtered = RegexFilter(**options).apply([[p] for p in preds], [None] * len(preds))
        filtered = list(TakeFirstFilter().apply(filtered, None))  # one string per prediction
        out[flt["name"]] = [
            bool(exact_match_hf_evaluate(predictions=[f], references=[gold], **kwargs)["exact_match"])
            for f in filtered
        ]
    return out


@pytest.mark.parametrize("gold", GOLDS)
def test_gsm8k_matches_lm_eval(gold):
    ref = _lm_eval_scores(PREDICTIONS, gold)
    assert [gsm8k_strict(p, gold) for p in PREDICTIONS] == ref["strict-match"]
    assert [gsm8k_flexible(p, gold) for p in PREDICTIONS] == ref["flexible-extract"]
    assert any(ref["strict-match"]) and not all(ref["flexible-extract"])  # the cases are not trivial


# ---------------------------------------------------------------- HiTab


def test_extract_boxed_balanced():
    assert extract_boxed(r"a \boxed{\frac{1}{2}} b \boxed{x}") == [r"\frac{1}{2}", "x"]
    assert extract_boxed(r"\boxed{open") == []
    assert extract_boxed(None) == []


@pytest.mark.parametrize(
    "pred, gold, correct",
    [
        (r"\boxed{12}", ["12"], 1),
        (r"\boxed{12.004}", ["12"], 1),  # within 1e-2
        (r"\boxed{12.02}", ["12"], 0),
        (r"\boxed{45\%}", ["45"], 1),  # \% -> %, then % dropped
        (r"\boxed{45%}", ["45.0"], 1),
        (r"\boxed{\text{Ontario}}", ["ontario"], 1),  # \text{} stripped, lower-case
        (r"\boxed{Ontario.}", ["Ontario"], 1),  # trailing period
        (r"\boxed{\frac{1}{2}}", [r"\frac{1}{2}"], 1),  # \frac{ and } dropped on both sides: "1{2"
        (r"\boxed{\frac{1}{2}}", ["0.5"], 0),  # no fraction arithmetic
        (r"\boxed{1,234}", ["1234"], 1),  # our decision: thousands separators parse
        (r"\boxed{1,234}", "1,234", 1),  # ... and a gold string is not split there
        (r"\boxed{-0.5}", [-0.5], 1),  # numeric gold
        (r"\boxed{ab}", ["abc"], 0),
        ("no box", ["12"], 0),
        ("", ["12"], 0),
    ],
)
def test_hitab_single(pred, gold, correct):
    s = hitab_score(pred, gold)
    assert s["correct"] == correct
    assert s["n_gold"] == 1


def test_hitab_multi_answer_greedy_one_to_one():
    s = hitab_score(r"\boxed{5} and \boxed{5} and \boxed{7}", ["5", "7"])
    assert (s["correct"], s["n_gold"], s["n_pred"]) == (2, 2, 3)
    assert s["accuracy"] == 1.0 and s["precision"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(0.8)
    s = hitab_score(r"\boxed{5}", ["5", "5"])  # a duplicate gold is matched once per prediction
    assert (s["correct"], s["accuracy"], s["precision"]) == (1, 0.5, 1.0)


def test_hitab_gold_string_split_on_commas():
    assert hitab_gold_list("a, b,c") == ["a", "b", "c"]
    assert hitab_gold_list("2019,2020") == ["2019", "2020"]
    assert hitab_gold_list("1,234") == ["1,234"]
    assert hitab_gold_list(["a, b"]) == ["a", "b"]  # a one-element list holding commas is split too
    assert hitab_gold_list(["a", "b, c"]) == ["a", "b, c"]
    s = hitab_score(r"\boxed{b} \boxed{a}", "a, b")
    assert s["correct"] == 2


def test_hitab_aggregate_is_micro():
    scores = [hitab_score(r"\boxed{1}", ["1"]), hitab_score(r"\boxed{2} \boxed{9}", ["2", "3", "4"])]
    agg = hitab_aggregate(scores)
    assert (agg["correct"], agg["n_gold"], agg["n_pred"]) == (2, 4, 3)
    assert agg["accuracy"] == 0.5 and agg["precision"] == pytest.approx(2 / 3)
    assert agg["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert hitab_aggregate([])["accuracy"] == 0.0


# ---------------------------------------------------------------- OpenScience


@pytest.mark.parametrize(
    "pred, gold, ok",
    [
        (r"so \boxed{B}", r"\boxed{B}", True),
        (r"\boxed{A} then \boxed{ B }", r"answer \boxed{B}", True),  # last box, whitespace stripped
        (r"\boxed{A}", r"\boxed{B}", False),
        ("B", r"\boxed{B}", False),  # missing box in the prediction
        (r"\boxed{B}", "B", False),  # missing box in the gold
        (r"\boxed{x^{2}}", r"\boxed{x^{2}}", True),
        (None, r"\boxed{B}", False),
    ],
)
def test_boxed_match(pred, gold, ok):
    assert boxed_match(pred, gold) is ok
