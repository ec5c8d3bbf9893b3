"""The lm-eval plugin: task YAMLs generated from lm-eval's own gsm8k.yaml, our GSM8K scores equal lm-eval's on the
same predictions, `--model mdm` end to end through lm-eval's CLI (offline), generate_until / loglikelihood."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from evals import lm_eval_plugin as plugin
from mdm.data import make_task
from mdm.errors import ConfigError
from mdm.eval.api import score_predictions
from mdm.eval.scorers import gsm8k_authors, gsm8k_flexible, gsm8k_strict
from tests.eval.test_eval_fixtures import save_run, sharp_model, tiny_tokenizer  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
HAVE_LOCAL_GSM8K = (ROOT / ".." / "shared" / "data" / "gsm8k" / "test.jsonl").is_file()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return sharp_model(tok)


# ---------------------------------------------------------------- task YAMLs


def test_committed_task_yaml_is_lm_evals_gsm8k():
    """evals/tasks/gsm8k_mdm.yaml = the built-in gsm8k.yaml of the installed lm-eval, renamed, tag dropped;
    regenerate with `python -m evals.lm_eval_plugin write-tasks evals/tasks --hub` when lm-eval changes it."""
    committed = (ROOT / "evals" / "tasks" / "gsm8k_mdm.yaml").read_text()
    assert committed == plugin.render_task_yaml(plugin.gsm8k_task_config(hub=True))
    builtin = yaml.safe_load(plugin.builtin_task_yaml("gsm8k").read_text())
    ours = yaml.safe_load(committed)
    assert {k: v for k, v in ours.items() if k != "task"} == {k: v for k, v in builtin.items() if k not in ("task", "tag")}


def test_local_task_yaml_uses_the_json_loader(tmp_path):
    missing = plugin.gsm8k_task_config(tmp_path / "nowhere")
    assert (missing["dataset_path"], missing["dataset_name"]) == plugin.GSM8K_HUB
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    local = plugin.gsm8k_task_config(tmp_path)
    assert local["dataset_path"] == "json" and "dataset_name" not in local
    assert local["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "test.jsonl").resolve())
    builtin = yaml.safe_load(plugin.builtin_task_yaml("gsm8k").read_text())
    for key in ("doc_to_text", "doc_to_target", "metric_list", "filter_list", "generation_kwargs", "num_fewshot"):
        assert local[key] == builtin[key]
    (path,) = plugin.write_tasks(tmp_path / "tasks", tmp_path)
    assert yaml.safe_load(path.read_text()) == local


# ---------------------------------------------------------------- GSM8K scores = lm-eval's


class ReplayLM(LM):
    """Answers each gsm8k question with a fixed prediction."""

    def __init__(self, by_question):
        super().__init__()
        self.by_question = by_question

    def generate_until(self, requests, disable_tqdm=False):
        return [self.by_question[r.args[0].removeprefix("Question: ").removesuffix("\nAnswer:")] for r in requests]

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def crafted_predictions(examples):
    """Correct, wrong, and unparsable answers in the shapes where strict, flexible and the authors' rule differ."""
    shapes = [
        lambda a: f"So the answer is\n#### {a}",
        lambda a: f"#### {a}.",
        lambda a: f"The answer is {a}.",
        lambda a: f"#### ${a}",
        lambda a: f"####{a}",
        lambda a: f"#### {a}\nQuestion: and 7 more",
        lambda a: f"#### {int(a.replace(',', '')) + 1}",
        lambda a: "",
        lambda a: "no numbers \ufffd\x00 at all",
        lambda a: f"#### {int(a.replace(',', '')):,}",
        lambda a: f"#### +{a}",
        lambda a: f"{a} {a} #### 0",
    ]
    return [shapes[i % len(shapes)](ex["answer"]) for i, ex in enumerate(examples)]


def test_gsm8k_scores_equal_lm_eval_on_the_same_predictions():
    import lm_eval
    from lm_eval.tasks import TaskManager

    n = 24
    examples = make_task("gsm8k", "test", n=n)
    preds = crafted_predictions(examples)
    lm = ReplayLM({ex["prompt"]: p for ex, p in zip(examples, preds)})
    tm = TaskManager(include_path=str(plugin.task_dir()), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=[plugin.GSM8K_TASK], task_manager=tm, limit=n, num_fewshot=0,
                                  log_samples=True, bootstrap_iters=0)  # fmt: skip
    lm_scores = res["results"][plugin.GSM8K_TASK]
    ours, per = score_predictions("gsm8k", preds, examples)
    assert ours["exact_match_strict"] == lm_scores["exact_match,strict-match"]
    assert ours["exact_match_flexible"] == lm_scores["exact_match,flexible-extract"]
    assert 0 < ours["exact_match_strict"] < ours["exact_match_flexible"] < 1  # the cases discriminate
    samples = res["samples"][plugin.GSM8K_TASK]
    for s in samples:
        rule = {"strict-match": gsm8k_strict, "flexible-extract": gsm8k_flexible}[s["filter"]]
        assert rule(s["resps"][0][0], s["target"]) == bool(s["exact_match"])
    assert len(samples) == 2 * n
    authors = sum(gsm8k_authors(p, ex["response"]) for p, ex in zip(preds, examples)) / n
    assert ours["authors_exact_match"] == authors


# ---------------------------------------------------------------- the model in-process


def test_generate_until_batches_and_cuts_at_until(tok, model):
    lm = plugin.MDMLM(model=model, tokenizer=tok, gen_length=16, steps=8, block_length=8, batch_size=3)
    contexts = [f"Question: {e['prompt']}\nAnswer:" for e in make_task("arith", "test", n=4)]
    reqs = [Instance("generate_until", {}, (c, {"until": []}), i) for i, c in enumerate(contexts)]
    full = lm.generate_until(reqs)
    one = plugin.MDMLM(model=model, tokenizer=tok, gen_length=16, steps=8, block_length=8, batch_size=1)
    assert one.generate_until(reqs) == full
    assert lm.generation_stats["forward_passes"] < one.generation_stats["forward_passes"]
    stop = full[0][len(full[0]) // 2 :][:3]
    cut = lm.generate_until([Instance("generate_until", {}, (contexts[0], {"until": [stop]}), 0)])
    assert cut == [full[0].split(stop)[0]]


def test_chat_template_in_the_training_format(tok, model):
    from mdm.sampler import chat_prompt_ids

    lm = plugin.MDMLM(model=model, tokenizer=tok)
    text = lm.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}])
    assert lm.encode(text) == chat_prompt_ids(tok, "What is 2 + 3?")


def test_loglikelihood_is_reproducible_and_finite(tok, model):
    lm = plugin.MDMLM(model=model, tokenizer=tok, mc_num=8, mc_batch_size=4, check_greedy=True)
    reqs = [Instance("loglikelihood", {}, ("Ava has 3 apples.", " She eats 1."), 0),
            Instance("loglikelihood", {}, ("Ava has 3 apples. ", "Ben has 4."), 1)]  # fmt: skip
    first, again = lm.loglikelihood(reqs), lm.loglikelihood(reqs)
    assert first == again
    assert all(ll < 0 and isinstance(g, bool) for ll, g in first)
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("Ava has 3 apples.",), 0)])
    assert rolling < 0


def test_bad_model_args(tok, model):
    with pytest.raises(ConfigError, match="unknown model argument"):
        plugin.MDMLM(model=model, tokenizer=tok, temprature=0.5)
    with pytest.raises(ConfigError, match="remasking"):
        plugin.MDMLM(model=model, tokenizer=tok, remasking="sideways")
    with pytest.raises(ConfigError, match="pretrained"):
        plugin.MDMLM()
    with pytest.raises(ConfigError, match="no such directory"):
        plugin.MDMLM(pretrained="/nonexistent/run")


# ---------------------------------------------------------------- end to end through lm-eval's CLI


def lm_eval_cli(args, tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                        "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "evals.lm_eval_plugin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LOCAL_GSM8K, reason="needs ../shared/data/gsm8k (offline)")
def test_end_to_end_lm_eval_with_model_mdm(tmp_path, tok, model):
    run = save_run(tmp_path / "run", tok, model, {"task": "gsm8k"})
    out = tmp_path / "lm_eval_out"
    proc = lm_eval_cli(["--model", "mdm", "--model_args", f"pretrained={run},gen_length=16,steps=8,block_length=8",
                        "--tasks", "gsm8k_mdm", "--limit", "3", "--num_fewshot", "0", "--device", "cpu",
                        "--output_path", str(out), "--log_samples"], tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    scores = results["results"]["gsm8k_mdm"]
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(scores)
    assert results["n-samples"]["gsm8k_mdm"]["effective"] == 3
    assert results["config"]["model"] == "mdm"
    assert results["config"]["mdm_decoding"] | {"gen_length": 16, "steps": 8, "block_length": 8} == results["config"][
        "mdm_decoding"]  # fmt: skip
    (samples,) = out.rglob("samples_gsm8k_mdm_*.jsonl")
    (authors,) = out.rglob("authors_gsm8k_mdm_*.json")
    extra = json.loads(authors.read_text())
    assert extra["n"] == 3 and extra["mdm_scorers_agree_per_sample"] is True
    assert extra["exact_match,strict-match"] == scores["exact_match,strict-match"]
    assert plugin.score_samples(samples) == extra
    assert "authors' #### exact match" in proc.stdout


def test_unknown_task_is_a_clear_error(monkeypatch, capsys):
    """Through lm-eval's own CLI, in-process: one line naming the task, no traceback. (lm-eval's built-in task
    index is left out to save its 7 s scan; the include path is enough to look a name up.)"""
    from lm_eval.tasks import TaskManager

    init = TaskManager.__init__
    monkeypatch.setattr(TaskManager, "__init__", lambda self, *a, **k: init(self, *a, **k | {"include_defaults": False}))
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with pytest.raises(SystemExit) as e:
        plugin.main(["--model", "mdm", "--model_args", "pretrained=/unused", "--tasks", "gsm8k_nope", "--device", "cpu"])
    assert str(e.value).startswith("lm_eval_plugin: error: Tasks not found: gsm8k_nope")
