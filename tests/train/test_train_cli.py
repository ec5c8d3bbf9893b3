"""`mdm train` through the real CLI: finished folders of another configuration, set-aside, and bad input as one
line (exit 2, no traceback, the file or key named), before any compute."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.train.test_train import tiny_run

ROOT = Path(__file__).resolve().parents[2]


def mdm(*args, timeout=300, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "mdm.cli", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def mdm_here(*args, env=None) -> subprocess.CompletedProcess:
    """`mdm ARGS` in this process (no 5 s torch import per call): what the CLI prints and returns, a traceback in
    stderr (exit 1) for an exception the CLI lets through. For the cases where a fresh process is not the point."""
    import contextlib
    import io
    import traceback

    from mdm.cli import main

    out, err, before = io.StringIO(), io.StringIO(), dict(os.environ)
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(before)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def one_line_error(out, *fragments) -> str:
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def md5s(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mdm-cache")


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_finished_folder_with_another_config_is_refused_then_rerun_stale_moves_it_aside(tmp_path, cache):
    run_dir = tmp_path / "sort_std"
    config = write(tmp_path / "run.yaml", tiny_run(run_dir, cache))
    assert mdm("train", config).returncode == 0
    before = md5s(run_dir)

    again = mdm("train", config)
    assert again.returncode == 0 and again.stdout.startswith("mdm train: already done (nothing trained)")
    refused = mdm("train", config, "--set", "method=mirror", "--set", "training.lr=0.01")
    one_line_error(refused, str(run_dir), "another configuration", "method", "--rerun-stale")
    assert md5s(run_dir) == before  # the finished run is untouched and not reported as the new one

    moved = mdm("train", config, "--set", "method=mirror", "--set", "training.lr=0.01", "--rerun-stale")
    assert moved.returncode == 0, moved.stderr
    assert "moved to sort_std.stale-1" in moved.stderr and moved.stdout.startswith("mdm train: done in 4 steps")
    assert md5s(tmp_path / "sort_std.stale-1") == before  # kept, not deleted
    saved = json.loads((run_dir / "run_config.json").read_text())["config"]
    assert saved["method"] == "mirror" and saved["training"]["lr"] == 0.01

    report = mdm("report", tmp_path, "--out", tmp_path / "report")  # mdm train folders: no record.json
    assert report.returncode == 0, report.stderr
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "## Runs without a score" in readme and "| arith  | mirror   |     42 |" in readme
    assert str(run_dir / "record.json") in readme and "stale-1" not in readme  # the set-aside run is not reported


def user_data(folder: Path, n_train=64, n_test=6, long_rows=0) -> Path:
    """A user's own data set in GSM8K format (question, answer ending in '#### N'), from the arith generator;
    `long_rows` train rows get a response far longer than any max_length here."""
    from mdm.data import make_task

    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = [{"question": e["prompt"], "answer": e["response"]} for e in make_task("arith", split, n=n, seed=5)]
        for row in rows[:long_rows] if split == "train" else []:
            row["answer"] = "so " * 400 + row["answer"]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


EVAL_FAST = ["--n", "3", "--gen-length", "8", "--steps", "4", "--block-length", "8", "--t-grid", "2", "--no-likelihood"]


def test_mdm_eval_of_a_train_folder_reads_the_task_and_its_data_root(tmp_path, cache):
    data = user_data(tmp_path / "mydata")
    run_dir = tmp_path / "run"
    cfg = tiny_run(run_dir, cache, data={"task": "gsm8k", "max_length": 128, "options": {"root": str(data)}})
    assert mdm("train", write(tmp_path / "run.yaml", cfg)).returncode == 0
    questions = [json.loads(line)["question"] for line in (data / "test.jsonl").read_text().splitlines()][:3]

    for extra in ([], ["--task", "gsm8k"]):  # the record's task, or the same task named: the run's own data
        (run_dir / "eval_gsm8k.jsonl").unlink(missing_ok=True)
        out = mdm("eval", run_dir, *extra, *EVAL_FAST)
        assert out.returncode == 0, out.stderr
        samples = [json.loads(line) for line in (run_dir / "eval_gsm8k.jsonl").read_text().splitlines()]
        assert [s["prompt"] for s in samples] == questions, extra  # not the real GSM8K test set
        record = json.loads((run_dir / "record.json").read_text())
        assert record["eval"]["gsm8k"]["n"] == 3 and record["metrics"]["eval_task"] == "gsm8k"

    other = mdm("eval", run_dir, "--task", "arith", *EVAL_FAST)  # another task: its own data, no root
    assert other.returncode == 0, other.stderr
    assert set(json.loads((run_dir / "record.json").read_text())["eval"]) == {"gsm8k", "arith"}


def bad_config(tmp_path, cache, case: str) -> dict:
    data = user_data(tmp_path / "mydata")
    gsm = {"task": "gsm8k", "max_length": 128, "options": {"root": str(data)}}
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.jsonl").write_text("")
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    return {
        "missing root": tiny_run(tmp_path / "run", cache, data={**gsm, "options": {"root": str(tmp_path / "nope")}}),
        "option typo": tiny_run(tmp_path / "run", cache, data={**gsm, "options": {"rot": str(data)}}),
        "empty train.jsonl": tiny_run(tmp_path / "run", cache, data={**gsm, "options": {"root": str(tmp_path / "empty")}}),
        "messages rows": tiny_run(tmp_path / "run", cache, data={**gsm, "options": {"root": str(tmp_path / "chat")}}),
        "base not a model": tiny_run(tmp_path / "run", cache, model={"base": str(data)}),
        "output dir through a file": tiny_run(tmp_path / "file" / "run", cache),
        "eos_pad > max_length": tiny_run(tmp_path / "run", cache, data__eos_pad=200),
        "most rows too long": tiny_run(tmp_path / "run", cache, data={**gsm, "max_length": 48}),
    }[case]


BAD = [
    ("missing root", "data.options.root", "nope: no such directory"),
    ("option typo", "data.options.rot", "unknown option of task 'gsm8k'; allowed: root"),
    ("empty train.jsonl", "data", "task 'gsm8k' has no training examples"),
    ("messages rows", "train.jsonl:1", "missing key 'question' (required: question, answer)"),
    ("base not a model", "model.base", "not a saved model folder (no config.json)"),
    ("output dir through a file", "output_dir", "cannot create the run folder"),
    ("eos_pad > max_length", "data.eos_pad", "200 leaves no room for a prompt within max_length 128"),
    ("most rows too long", "data.max_length", "examples are longer than max_length=48 tokens"),
]


@pytest.mark.parametrize("case,where,message", BAD, ids=[c[0] for c in BAD])
def test_bad_train_input_is_one_line_before_compute_and_leaves_no_folder(tmp_path, cache, case, where, message):
    out = mdm("train", write(tmp_path / "run.yaml", bad_config(tmp_path, cache, case)))
    line = one_line_error(out, where, message)
    assert line.startswith("mdm train: error: ")
    assert not (tmp_path / "run").exists()  # a run whose setup failed does not own its folder
    assert not (cache / "bases").exists()  # nothing was pretrained


def test_a_failed_setup_leaves_the_folder_to_the_fixed_config_and_dropped_rows_are_reported(tmp_path, cache):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # the user's folder: kept, but not claimed by the failed run
    cfg = bad_config(tmp_path, cache, "missing root")
    one_line_error(mdm("train", write(tmp_path / "run.yaml", cfg)), "data.options.root")
    assert list(run_dir.iterdir()) == []

    data = user_data(tmp_path / "long", n_train=60, long_rows=20)
    cfg["data"]["options"]["root"] = str(data)
    out = mdm("train", write(tmp_path / "run.yaml", cfg))  # another config than the failed one: accepted
    assert out.returncode == 0, out.stderr
    assert "run: data: 20 of 60 examples are longer than max_length=128 tokens: dropped (" in out.stderr
    assert json.loads((run_dir / "result.json").read_text())["dropped"] == 20


def test_a_read_only_run_folder_is_refused_before_setup(tmp_path, cache, monkeypatch):
    """A read-only filesystem (as root, chmod does not make a folder read-only: os.access answers as for one)."""
    from mdm.errors import ConfigError
    from mdm.train import RunConfig, Trainer
    from mdm.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match=r"output_dir: .*/run: the run folder is not writable"):
        Trainer(RunConfig.model_validate(tiny_run(tmp_path / "run", cache))).train()
    assert not (tmp_path / "run").exists()
