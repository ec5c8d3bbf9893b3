"""`evaluate_run` / `mdm eval`: record update (atomic, keys preserved), per-sample files, model discovery, bad
inputs, unparsable predictions, and the held-out likelihood metrics (fixed masks, ARM NLL)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mdm.cli import main as mdm_main
from mdm.data import Collator, make_task
from mdm.data.collate import tokenize_examples
from mdm.errors import ConfigError
from mdm.eval import scorers
from mdm.eval.api import evaluate_run, find_model_dir, score_predictions
from mdm.eval.likelihood import heldout_nll
from mdm.objective import ARMObjective
from tests.eval.test_eval_fixtures import save_run, sharp_model, tiny_tokenizer  # noqa: F401
from tests.numerics import approx

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"gen_length": 16, "steps": 8, "block_length": 8, "t_grid": 4, "batch_size": 4}
RECORD = {"task": "arith", "method": "standard", "seed": 42, "status": "done", "metrics": {"eval_loss": 2.5},
          "custom": {"keep": [1, 2]}}  # fmt: skip


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def run_dir(tmp_path, tok):
    return save_run(tmp_path / "run", tok, sharp_model(tok), RECORD)


def test_evaluate_run_writes_scores_knobs_and_samples(run_dir):
    (run_dir / "record.json").chmod(0o644)
    result = evaluate_run(run_dir, {"n": 4, **FAST})
    record = json.loads((run_dir / "record.json").read_text())
    # existing keys survive, the metrics dict is merged
    assert record["custom"] == {"keep": [1, 2]} and record["method"] == "standard"
    assert record["metrics"]["eval_loss"] == 2.5
    assert record["metrics"]["score"] == 100 * record["eval"]["arith"]["scores"]["exact_match_strict"]
    ev = record["eval"]["arith"]
    assert ev["n"] == 4 and ev["model_kind"] == "mdm"
    assert set(ev["scores"]) >= {"exact_match_strict", "exact_match_flexible", "authors_exact_match"}
    knobs = ev["decoding"]
    assert (knobs["gen_length"], knobs["steps"], knobs["block_length"], knobs["temperature"], knobs["remasking"]) == (
        16, 8, 8, 0.0, "low_confidence")  # fmt: skip
    assert ev["likelihood"]["metric"] == "mdm_elbo" and math.isfinite(ev["likelihood"]["nll_per_token"])
    assert ev["likelihood"]["t_grid"] == 4
    rows = [json.loads(line) for line in (run_dir / ev["samples_file"]).read_text().splitlines()]
    assert len(rows) == 4 and all({"prediction", "gold", "scores", "heldout_nll"} <= set(r) for r in rows)
    assert result["tasks"]["arith"]["scores"] == ev["scores"]
    assert (run_dir / "record.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in run_dir.iterdir()) == ["eval_arith.jsonl", "final", "record.json"]

    # a second task adds its entry and keeps the first; the record's own task still owns metrics.score
    evaluate_run(run_dir, {"tasks": ["gsm8k"], "n": 2, "likelihood": False, **FAST})
    record2 = json.loads((run_dir / "record.json").read_text())
    assert set(record2["eval"]) == {"arith", "gsm8k"} and record2["eval"]["arith"] == record["eval"]["arith"]
    assert record2["metrics"] == record["metrics"]
    assert record2["eval"]["gsm8k"]["likelihood"] is None


@pytest.mark.numerics
def test_greedy_eval_is_reproducible_and_batch_size_free(run_dir):
    a = evaluate_run(run_dir, {"n": 3, **FAST, "write": False})
    b = evaluate_run(run_dir, {"n": 3, **FAST, "batch_size": 1, "write": False})
    assert a["tasks"]["arith"]["scores"] == b["tasks"]["arith"]["scores"]
    # another batch size: other float32 reduction orders in the forward, so the policy's tolerance
    assert a["tasks"]["arith"]["likelihood"]["nll_per_token"] == approx(b["tasks"]["arith"]["likelihood"]["nll_per_token"])
    assert not (run_dir / "eval_arith.jsonl").exists()


def test_in_memory_model_and_arm_run(tmp_path, tok):
    model = sharp_model(tok, causal=True)
    out = evaluate_run(tmp_path / "arm", {"tasks": "arith", "n": 2, **FAST}, model=model, tokenizer=tok)
    r = out["tasks"]["arith"]
    assert r["model_kind"] == "arm" and r["likelihood"]["metric"] == "arm_nll"
    assert r["decoding"]["sampler"] == "autoregressive"
    assert json.loads((tmp_path / "arm" / "record.json").read_text())["metrics"]["eval_task"] == "arith"


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "settings, where",
    [
        ({"tasks": ["nope"]}, "task"),
        ({"tasks": ["arith"], "bogus": 1}, "eval.bogus"),
        ({"tasks": ["arith"], "gen_length": 10, "block_length": 4}, "decoding.block_length"),
        ({"tasks": ["arith"], "remasking": "sideways"}, "decoding.remasking"),
        ({"tasks": ["arith"], "n": 0}, "eval.n"),
    ],
)
def test_bad_settings_fail_before_loading(tmp_path, settings, where):
    (tmp_path / "config.json").write_text("{not even json")  # never read: settings are checked first
    with pytest.raises(ConfigError) as e:
        evaluate_run(tmp_path, settings)
    assert e.value.where == where


def test_malformed_record_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "record.json").write_text('{"task": "arith",')
    with pytest.raises(ConfigError, match="not valid JSON"):
        evaluate_run(tmp_path, {"tasks": ["arith"]})


def test_no_task_anywhere(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no task given"):
        evaluate_run(tmp_path, {})


def test_find_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="no model found"):
        find_model_dir(tmp_path)
    with pytest.raises(ConfigError, match="no such directory"):
        find_model_dir(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    assert find_model_dir(tmp_path) == tmp_path
    for step in (5, 12, 9):
        (tmp_path / "checkpoint" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "checkpoint" / f"checkpoint-{step}" / "config.json").write_text("{}")
    assert find_model_dir(tmp_path) == tmp_path / "checkpoint" / "checkpoint-12"
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    assert find_model_dir(tmp_path) == tmp_path / "final"


def test_unparsable_predictions_score_as_wrong(monkeypatch):
    gsm = make_task("gsm8k", "test", n=4)
    preds = ["", "\x00\ufffd garbage", "#### ", f"so\n#### {gsm[3]['answer']}"]
    agg, per = score_predictions("gsm8k", preds, gsm)
    assert [r["strict"] for r in per] == [False, False, False, True]
    assert agg["exact_match_strict"] == 0.25 and agg["authors_exact_match"] == 0.25
    tables = make_task("tables", "test", n=2)
    agg, per = score_predictions("tables", ["\\boxed{unclosed", "\\boxed{}}}{{"], tables)
    assert agg["accuracy"] == 0.0
    agg, _ = score_predictions("openscience", ["no box"], [{"response": "\\boxed{4}", "answer": "4"}])
    assert agg["accuracy"] == 0.0

    def broken(*_):
        raise RuntimeError("scorer bug")

    monkeypatch.setattr(scorers, "gsm8k_flexible", broken)
    agg, per = score_predictions("gsm8k", preds, gsm)
    assert agg["exact_match_flexible"] == 0.0 and "scorer bug" in per[0]["error"]
    assert agg["exact_match_strict"] == 0.25


def test_mdm_eval_cli(run_dir, capsys):
    assert mdm_main(["eval", str(run_dir), "--n", "2", "--gen-length", "8", "--steps", "8", "--block-length", "8",
                     "--t-grid", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "arith (mdm, n=2)" in out and "gen_length=8" in out and "held-out mdm_elbo" in out
    assert mdm_main(["eval", str(run_dir), "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------- held-out likelihood


class Recorder(torch.nn.Module):
    """Uniform logits; remembers every input it was given."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.seen = vocab, []
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        self.seen += [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask)]
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + self.w})()


def _nll(model, tok, items, family="mdm", **kw):
    return heldout_nll(model, tok, items, "arith", 512, family=family, mask_token_id=tok.mask_token_id, **kw)


@pytest.mark.numerics
def test_heldout_nll_is_deterministic_with_fixed_masks(tok):
    items, _ = tokenize_examples(tok, make_task("arith", "test", n=5), "arith", max_length=512)
    a, b = Recorder(len(tok)), Recorder(len(tok))
    ra = _nll(a, tok, items, t_grid=8, batch_size=3)
    rb = _nll(b, tok, items, t_grid=8, batch_size=16)
    assert sorted(a.seen) == sorted(b.seen)  # the same masked inputs, whatever the model and batch size
    # this model's logits do not depend on the batch (a constant); the per-sequence bounds are summed in float64
    # in the same row order: only float64 rounding can differ, hence 1e-12
    assert ra["nll_per_token"] == pytest.approx(rb["nll_per_token"], rel=1e-12)
    assert ra["per_sequence_nll"] == pytest.approx(rb["per_sequence_nll"], rel=1e-12)
    # uniform model: CE = log V per masked token; the t-grid estimate of E[(1/p) |M_t|] / |E| is close to 1
    assert ra["nll_per_token"] / math.log(len(tok)) == pytest.approx(1.0, abs=0.2)
    # the micro and macro averages of the per-sequence bounds; macro is the trainer's sum (float32 per row)
    n = [len(it["input_ids"]) - it["prompt_length"] for it in items]
    assert ra["nll_per_token"] == pytest.approx(sum(ra["per_sequence_nll"]) / sum(n), rel=1e-12)
    assert ra["nll_per_token_macro"] == approx(sum(b / k for b, k in zip(ra["per_sequence_nll"], n)) / len(n))
    other_seed = _nll(Recorder(len(tok)), tok, items, t_grid=8, seed=1)
    assert other_seed["nll_per_token"] != ra["nll_per_token"]
    model = sharp_model(tok)
    assert _nll(model, tok, items, t_grid=4) == _nll(model, tok, items, t_grid=4)


@pytest.mark.numerics
def test_arm_nll_matches_the_arm_training_loss(tok):
    model = sharp_model(tok, causal=True)
    examples = make_task("arith", "test", n=3)
    items, _ = tokenize_examples(tok, examples, "arith", max_length=512)
    batch = Collator(tok, "arith", 512)(items)
    with torch.no_grad():
        loss = ARMObjective()(model, batch).loss
    res = _nll(model, tok, items, family="arm", batch_size=2)
    assert res["metric"] == "arm_nll"
    assert res["nll_per_token_macro"] == approx(float(loss))  # other batches: float32 tolerance
    n = [len(it["input_ids"]) - it["prompt_length"] for it in items]
    assert res["nll_per_token_macro"] == approx(sum(b / k for b, k in zip(res["per_sequence_nll"], n)) / len(n))


def test_a_run_is_evaluated_on_the_task_level_it_trained_on(tmp_path, tok):
    record = {**RECORD, "config": {"data": {"task": "arith", "options": {"level": 1}}}}
    run = save_run(tmp_path / "run", tok, sharp_model(tok), record)

    def prompts(settings, task="arith"):
        evaluate_run(run, {"n": 3, **FAST, "likelihood": False, **settings})
        return [json.loads(line)["prompt"] for line in (run / f"eval_{task}.jsonl").read_text().splitlines()]

    assert prompts({}) == [e["prompt"] for e in make_task("arith", "test", 3, level=1)]
    # explicit task_options win; another task does not inherit the run's options
    assert prompts({"task_options": {"level": 2}}) == [e["prompt"] for e in make_task("arith", "test", 3)]
    assert prompts({"tasks": ["tables"]}, "tables") == [e["prompt"] for e in make_task("tables", "test", 3)]
