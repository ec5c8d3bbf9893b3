"""Task `dataset` (the user's own data) and `mdm generate`: loaders, the TaskSpec built from options (its flags end
up in the batch masks), chat `messages`, one-line errors before compute, and the real CLI end to end (train
P-POTS+MIRROR, `mdm eval RUN` with no --task, `mdm generate`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mdm.cli import main
from mdm.data import Collator, build_tokenizer, format_chat, get_task, make_task, tokenize_examples
from mdm.data.tokenizer import ASSISTANT, BOS, USER
from mdm.errors import ConfigError
from tests.train.test_train import TINY_SIZE
from tests.train.test_train_cli import mdm

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "benchmarks" / "examples"


def chat_rows(split: str, n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["response"]}],
             "answer": e["answer"]} for e in make_task("arith", split, n=n, level=1)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tok():
    texts = [e["prompt"] + "\n" + e["response"] for e in make_task("arith", "train", n=200)]
    return build_tokenizer(texts, vocab_size=300)


def run_config(tmp_path: Path, options: dict, name: str, **sections) -> Path:
    cfg = {"model": {"size": TINY_SIZE, "tokenizer_examples": 200, "cache_dir": str(tmp_path / "cache")},
           "data": {"task": "dataset", "max_length": 128, "options": options},
           "method": "ppots+mirror",
           "training": {"max_steps": 3, "global_batch_size": 8, "micro_batch_size": 8, "lr": 1e-3, "threads": 1,
                        "progress": False},
           "eval": {"t_grid": 2, "accuracy": {"gen_length": 8, "steps": 8, "block_length": 8}},
           "ppots_pilot": {"a": 4, "b": 10, "c": 2, "restarts": 1},
           "output_dir": str(tmp_path / name)} | sections
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- the TaskSpec from options, chat formatting


def test_options_build_the_taskspec_and_its_flags_reach_the_batch_masks(tok):
    assert get_task("dataset", {"scorer": "gsm8k"}).delimiters == ("####",)
    assert get_task("dataset", {"scorer": "boxed"}).delimiters == ("\\boxed{", "}")
    assert get_task("dataset", {}).metric == "exact" and get_task("dataset", {}).delimiters == ()
    spec = get_task("dataset", {"scorer": "none", "delimiters": ["####"], "syntax_patterns": ["apples"]})
    assert (spec.metric, spec.delimiters, spec.syntax_patterns) == ("none", ("####",), ("apples",))
    ex = {"prompt": "Ava has 3 apples. How many apples?", "response": "3 + 4 = 7\n#### 7"}
    (item,), _ = tokenize_examples(tok, [ex], spec, 128)
    batch = Collator(tok, spec, 128)([item])
    ids, p0 = item["input_ids"], item["prompt_length"]
    flagged = lambda mask: "".join(tok.decode([ids[i]]) for i, f in enumerate(mask.tolist()) if f)  # noqa: E731
    assert "####" in flagged(batch.delimiter_mask[0]) and flagged(batch.syntax_mask[0]).count("apples") == 2
    assert not batch.delimiter_mask[0, :p0].any() and not batch.syntax_mask[0, p0:].any()
    (plain,), _ = tokenize_examples(tok, [ex], "dataset", 128)  # no options: no flags
    assert not any(plain["delimiter_mask"]) and not any(plain["syntax_mask"])
    with pytest.raises(ConfigError, match="data.options.scorer: unknown scorer 'bleu'; allowed: exact, gsm8k"):
        get_task("dataset", {"scorer": "bleu"})


def test_messages_render_prior_turns_in_the_prompt_with_and_without_a_chat_template(tok):
    turns = [{"role": "system", "content": "Be short."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2 + 2?"}]
    ids, p0 = format_chat(tok, "ignored", "4", turns)
    assert tok.decode(ids[:p0]) == BOS + USER + "Be short." + USER + "Hi" + ASSISTANT + "Hello" + USER + "2 + 2?" \
        + ASSISTANT
    assert tok.decode(ids[p0:]) == "4" + tok.eos_token
    assert format_chat(tok, "Hi", "x") == format_chat(tok, "ignored", "x", [{"role": "user", "content": "Hi"}])
    tok.chat_template = ("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}")
    try:
        ids, p0 = format_chat(tok, "ignored", "4", turns)
        assert tok.decode(ids[:p0]) == "[system]Be short.[user]Hi[assistant]Hello[user]2 + 2?"
        assert tok.decode(ids[p0:]) == "[assistant]4" + tok.eos_token  # the header belongs to the response
    finally:
        tok.chat_template = None


# ---------------------------------------------------------------- sources


def test_every_source_kind_reads_the_same_rows(tmp_path):
    import datasets

    rows = [{"question": f"q{i}", "answer": f"a{i}", "gold": str(i)} for i in range(6)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(tmp_path / "dict"))
    cols = {"prompt_key": "question", "response_key": "answer", "answer_key": "gold"}
    for source in ("d.jsonl", "d.json", "d.parquet", "one", "dict"):
        got = make_task("dataset", "train", **cols, path=str(tmp_path / source))
        assert [(e["prompt"], e["response"], e["answer"]) for e in got] == [(f"q{i}", f"a{i}", str(i)) for i in
                                                                            range(6)], source
    test = make_task("dataset", "test", **cols, path=str(tmp_path / "dict"), test_split="test")
    assert len(test) == 2 and test[0]["id"] == "dataset-test-0"
    chat = make_task("dataset", "train", 2, path=str(write_jsonl(tmp_path / "c.jsonl", chat_rows("train", 3))))
    assert len(chat) == 2 and chat[0]["messages"][-1]["role"] == "user" and "####" in chat[0]["response"]


@pytest.mark.parametrize("options, split, where, words", [
    ({"path": "nope.jsonl"}, "train", "data.options.path", "nope.jsonl: no such file or folder"),
    ({"path": "d.jsonl", "colums": "x"}, "train", "data.options.colums", "allowed: path, hub_id, config"),
    ({"path": "d.jsonl", "prompt_key": "q"}, "train", "data.options.format",
     "neither a 'messages' column nor 'q' + 'response' columns; it has: question, answer"),
    ({"path": "d.jsonl", "prompt_key": "question", "response_key": "answer", "answer_key": "gold"}, "train",
     "data.options.answer_key", "no column 'gold'; it has: question, answer"),
    ({"path": "d.jsonl", "format": "messages"}, "train", "data.options.messages_key",
     "no column 'messages'; it has: question, answer"),
    ({"path": "d.jsonl"}, "test", "data.options.test_path", "no test source for accuracy"),
    ({"path": "empty.jsonl"}, "train", "data.options.path", "empty.jsonl: no rows"),
    ({"path": "d.tsv"}, "train", "data.options.path", "unsupported file type '.tsv'; allowed: .jsonl, .json, "
     ".parquet, .csv"),
    ({"path": "d.csv"}, "train", "data.options.path", "d.csv: no rows"),
    ({"hub_id": "someone/no-such-data"}, "train", "data.options.hub_id", "cannot load hub dataset "
     "'someone/no-such-data' offline"),
    ({}, "train", "data.options", "needs a source: path"),
    ({"path": "bad.jsonl"}, "train", "bad.jsonl:2", "not valid JSON"),
    ({"path": "turns.jsonl"}, "train", "turns.jsonl: row 1", "no assistant message"),
    ({"path": "ragged.jsonl"}, "train", "ragged.jsonl: row 2", "no 'response'; it has: prompt"),
])
def test_data_problems_are_one_clear_error(tmp_path, monkeypatch, options, split, where, words):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "d.csv").write_text("question,answer\n")
    (tmp_path / "d.tsv").write_text("question\tanswer\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "response": "r"}\n{"prompt": \n')
    write_jsonl(tmp_path / "turns.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    write_jsonl(tmp_path / "ragged.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p"}])
    with pytest.raises(ConfigError) as e:
        make_task("dataset", split, **options)
    assert e.value.where == where and words in e.value.problem, str(e.value)


def test_train_errors_are_one_line_before_compute(tmp_path, capsys):
    data = str(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}] * 20))
    no_accuracy = {"eval": {"t_grid": 2}}
    cases = [
        ({"path": str(tmp_path / "nope.jsonl")}, no_accuracy, "data.options.path: ", "nope.jsonl: no such file"),
        ({"path": data, "scorer": "bleu"}, no_accuracy, "data.options.scorer: ", "allowed: exact, gsm8k, boxed, "),
        ({"path": data}, no_accuracy, "data.options.format: ", "it has: question, answer"),
        ({"path": data, "prompt_key": "question", "response_key": "answer"}, {},
         "data.options.test_path: ", "eval.accuracy is set but there is no test source"),
    ]
    for i, (options, extra, where, words) in enumerate(cases):
        assert main(["train", str(run_config(tmp_path, options, f"bad{i}", **extra))]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and where in err and words in err, err
        assert err.startswith("mdm train: error: ") and not (tmp_path / f"bad{i}" / "model").exists()


def test_a_base_model_is_keyed_by_the_content_of_the_file(tmp_path):
    from mdm.train.config import RunConfig
    from mdm.train.model import base_key

    path = write_jsonl(tmp_path / "d.jsonl", chat_rows("train", 5))
    cfg = RunConfig.model_validate(yaml.safe_load(run_config(tmp_path, {"path": str(path)}, "k").read_text()))
    before = base_key(cfg)
    write_jsonl(path, chat_rows("train", 6))
    assert base_key(cfg) != before


# ---------------------------------------------------------------- end to end through the CLI


def test_jsonl_messages_train_eval_generate_through_the_cli(tmp_path, capsys):
    """`mdm train` in its own process; `mdm eval` and `mdm generate` through the same entry point in this one."""
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows("train", 40))
    test = write_jsonl(tmp_path / "test.jsonl", chat_rows("test", 4))
    cfg = run_config(tmp_path, {"path": str(train), "test_path": str(test), "scorer": "gsm8k"}, "run")
    out = mdm("train", cfg)
    assert out.returncode == 0 and "mdm train: done in 3 steps" in out.stdout, out.stderr[-2000:]
    run = tmp_path / "run"
    assert json.loads((run / "ppots.json").read_text())  # P-POTS was fitted on the user's data
    assert main(["eval", str(run), "--t-grid", "2"]) == 0  # task and options come from the run folder
    shown = capsys.readouterr().out
    assert "dataset (mdm, n=4): exact_match_strict=" in shown
    assert "gen_length=8 steps=8 block_length=8" in shown  # the run's own eval.accuracy decoding
    record = json.loads((run / "record.json").read_text())
    assert record["eval"]["dataset"]["n"] == 4 and "score" in record["metrics"]
    assert main(["generate", str(run), "--prompt", "Ava has 2 apples.", "--prompt", "Ben has 3 cards.", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["prompt"] for x in lines] == ["Ava has 2 apples.", "Ben has 3 cards."]
    assert all(isinstance(x["response"], str) for x in lines)


def test_save_to_disk_folder_with_a_tiny_base_then_eval_and_interactive_generate(tmp_path, capsys, monkeypatch):
    import io

    import datasets

    rows = [{"q": e["prompt"], "a": e["response"]} for e in make_task("arith", "train", n=40, level=1)]
    test = [{"q": e["prompt"], "a": e["response"]} for e in make_task("arith", "test", n=3, level=1)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(test)}) \
        .save_to_disk(str(tmp_path / "data"))
    options = {"path": str(tmp_path / "data"), "test_split": "test", "prompt_key": "q", "response_key": "a",
               "scorer": "gsm8k"}
    model = {"size": TINY_SIZE, "tokenizer_examples": 40, "cache_dir": str(tmp_path / "cache"), "base": "auto",
             "pretrain": {"n_examples": 16, "max_steps": 2, "global_batch_size": 8, "micro_batch_size": 8}}
    assert main(["train", str(run_config(tmp_path, options, "disk", model=model))]) == 0
    assert list((tmp_path / "cache" / "bases").glob("dataset-mdm-*/config.json"))  # pretrained on the user's data
    assert main(["eval", str(tmp_path / "disk"), "--t-grid", "2", "--no-likelihood"]) == 0
    assert "dataset (mdm, n=3): exact_match_strict=" in capsys.readouterr().out
    from mdm.eval.api import evaluate_run

    none = evaluate_run(tmp_path / "disk", {"task_options": options | {"scorer": "none"}, "t_grid": 2, "write": False})
    r = none["tasks"]["dataset"]
    assert r["scores"]["primary"] is None and r["generation"]["forward_passes"] == 0 and r["likelihood"]
    assert "score" not in none["metrics"] and none["metrics"]["heldout_nll_per_token"] > 0
    monkeypatch.setattr("sys.stdin", io.StringIO("Ava has 2 apples.\n\nBen has 3 cards.\n"))
    assert main(["generate", str(tmp_path / "disk"), "--json"]) == 0
    assert [json.loads(x)["prompt"] for x in capsys.readouterr().out.splitlines()] == ["Ava has 2 apples.",
                                                                                        "Ben has 3 cards."]


def test_generate_bad_target_and_bad_knobs_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, words in [([str(tmp_path / "nope")], "nope: no such run or model folder"),
                        ([str(tmp_path / "empty")], "no model found"),
                        ([str(tmp_path / "empty"), "--batch-size", "0"], "no model found")]:
        assert main(["generate", *argv, "--prompt", "x"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mdm generate: error: run_dir: ") and words in err and len(err.splitlines()) == 1


def test_the_committed_example_is_valid_and_in_messages_format(monkeypatch):
    monkeypatch.chdir(ROOT)  # its paths are relative to the repo root, where its launch command runs
    from mdm.train.config import load_run_config

    cfg = load_run_config(EXAMPLE / "own_data.yaml", output_dir="-")
    assert cfg.data.task == "dataset" and cfg.method in ("ppots+mirror", {"preset": "ppots+mirror"})
    rows = make_task("dataset", "train", **cfg.data.options)
    assert len(rows) >= 200 and rows[0]["messages"][0]["role"] == "user"
    assert make_task("dataset", "test", **cfg.data.options)


def test_bench_spec_task_and_variance_profiler_on_the_users_data(tmp_path, capsys, monkeypatch):
    from tests.profiling.test_variance_cli import SPEC

    monkeypatch.setenv("MDM_CACHE", str(tmp_path / "cache"))
    train = str(write_jsonl(tmp_path / "train.jsonl", chat_rows("train", 40)))
    test = str(write_jsonl(tmp_path / "test.jsonl", chat_rows("test", 2)))
    options = {"path": train, "test_path": test, "scorer": "gsm8k", "syntax_patterns": ["apples"]}
    bench = {"name": "own", "seeds": [1], "methods": ["ppots+mirror"], "presets": {"tiny": {
        "tasks": {"dataset": {"n_train": 40, "max_length": 128, "options": options}},
        "model": {"size": TINY_SIZE, "tokenizer_examples": 40},
        "training": {"max_steps": 2, "global_batch_size": 8, "micro_batch_size": 8, "threads": 1, "progress": False},
        "eval": {"t_grid": 2, "accuracy": {"n": 2, "gen_length": 8, "steps": 8, "block_length": 8,
                                           "likelihood": False}},
        "ppots_pilot": {"a": 4, "b": 10, "c": 2, "restarts": 1}}}}
    spec = tmp_path / "own.yaml"
    spec.write_text(yaml.safe_dump(bench))
    assert main(["bench", str(spec), "--results", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    (record,) = (tmp_path / "runs").rglob("record.json")
    record = json.loads(record.read_text())
    assert record["status"] == "done" and record["eval"]["dataset"]["n"] == 2, record.get("reason")
    bad = json.loads(json.dumps(bench))
    bad["presets"]["tiny"]["tasks"]["dataset"]["options"]["test_path"] = str(tmp_path / "nope.jsonl")
    spec.write_text(yaml.safe_dump(bad))
    assert main(["bench", str(spec), "--results", str(tmp_path / "runs2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "presets.tiny.tasks.dataset.options.test_path: " in err and "nope.jsonl: no such file" in err, err

    variance = {**SPEC, "data": {"task": "dataset", "n_train": 40, "max_length": 96, "options": options}}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(variance))
    for command in ("variance", "fit-ppots"):
        argv = [command, "--config", str(tmp_path / "v.yaml"), "--out", str(tmp_path / command), "--no-progress"]
        assert main(argv + (["--methods", "standard,ppots+mirror"] if command == "variance" else [])) == 0
    assert json.loads((tmp_path / "variance" / "variance.json").read_text())["data"].startswith("dataset/train")
    assert (tmp_path / "fit-ppots" / "ppots.json").is_file()


def test_generate_help_and_data_option_errors_import_no_torch(tmp_path):
    from tests.cli.test_cli_methods import _imports_of

    heavy, rc, _ = _imports_of("generate", "--help")
    assert heavy == [] and rc == "0", heavy
    bad = run_config(tmp_path, {"path": str(tmp_path / "nope.jsonl")}, "bad")
    for argv, fragment in ((["train", str(bad)], "data.options.path: "),
                           (["generate", str(tmp_path / "no-run"), "--prompt", "x"], "no such run or model folder")):
        heavy, rc, err = _imports_of(*argv)
        assert rc == "2" and fragment in err and heavy == [], (argv, heavy, err)
