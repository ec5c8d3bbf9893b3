"""Nothing lost, nothing silent (issue 33, item 1): the six cases a user hit, each through the real CLI, each ending
in one line and no traceback, with nothing computed lost:

  a full disk (a real tmpfs when this process may mount one, and torch's short-write error simulated): the path and
  the bytes, the last good checkpoint intact and resumed from; `--device cuda` without CUDA; two `mdm train` on one
  folder (one runs, the other names the holder; the log and the result agree); null responses (dropped, counted);
  every response empty (refused before training); a 10 MB row (measured before tokenizing, dropped in seconds, and
  Ctrl-C works there)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.train.test_train import TINY_SIZE
from tests.train.test_train_cli import ROOT, mdm_here

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(n: int = 60) -> list[dict]:
    rng = random.Random(0)
    pairs = [(rng.randint(0, 50), rng.randint(0, 50)) for _ in range(n)]
    return [{"prompt": f"{a} + {b} =", "response": str(a + b)} for a, b in pairs]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one tiny BPE for the module


def config(tmp_path: Path, cache: Path, data: Path, out: Path, **training) -> Path:
    cfg = {"model": {"size": TINY_SIZE, "tokenizer_examples": 200, "vocab_size": 300, "cache_dir": str(cache)},
           "data": {"task": "dataset", "max_length": 64, "options": {"path": str(data), "scorer": "none"}},
           "training": {"max_steps": 6, "global_batch_size": 8, "micro_batch_size": 8, "lr": 1e-3, "threads": 1,
                        "progress": False} | training,
           "eval": {"t_grid": 2}, "output_dir": str(out)}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_line(out, code: int = 2) -> str:
    assert out.returncode == code and "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("mdm ")]
    assert len(lines) == 1, out.stderr
    return lines[0]


def log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- (a) a full disk


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform == "linux"


@pytest.mark.slow  # ~10 s: `mdm train` (in this process) on a real full tmpfs, then its resume
def test_a_full_tmpfs_is_one_line_and_the_last_checkpoint_survives_and_resumes(tmp_path, cache):
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root (the simulated full disk below runs everywhere)")
    disk = tmp_path / "disk"
    disk.mkdir()
    # a checkpoint of the tiny model is ~400 KB: the first fits, the second (written beside it) does not
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        run = disk / "run"
        cfg = config(tmp_path, cache, write_jsonl(tmp_path / "d.jsonl", rows()), run, max_steps=12,
                     checkpoint_every=2)
        line = one_line(mdm_here("train", cfg))
        assert f"{run}/checkpoints: no space left on the device to write checkpoint step_00000004 (about " in line
        assert " KB needed, " in line and " free); the last good checkpoint step_00000002 is intact" in line, line
        kept = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert kept == ["step_00000002"], kept  # the failed write's temporary folder is gone
        assert json.loads((run / "checkpoints/step_00000002/trainer_state.json").read_text())["step"] == 2
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        out = mdm_here("train", cfg)  # space again: it resumes from step 2 and finishes
        assert out.returncode == 0, out.stderr
        result = json.loads((run / "result.json").read_text())
        assert result["resumed_from"] == [2] and result["steps"] == 12 and log_steps(run) == list(range(1, 13))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_simulated_full_disk_under_torch_and_under_the_final_model_is_one_line(tmp_path, cache, monkeypatch):
    """torch's zip writer on a full disk raises `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected
    pos`; save_pretrained raises OSError ENOSPC. Each becomes one line; the last checkpoint stays; a rerun finishes."""
    from accelerate import Accelerator
    from transformers import PreTrainedModel

    run = tmp_path / "run"
    cfg = config(tmp_path, cache, write_jsonl(tmp_path / "d.jsonl", rows()), run, max_steps=8, checkpoint_every=2)
    real_save, calls = Accelerator.save_state, []

    def save_state(self, output_dir, **kw):
        calls.append(output_dir)
        if len(calls) == 2:  # the second checkpoint: half written, then torch's error
            real_save(self, output_dir, **kw)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3136 vs 3030")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    line = one_line(mdm_here("train", cfg))
    assert line.startswith(f"mdm train: error: {run}/checkpoints: no space left on the device to write checkpoint "
                           "step_00000004 (about ") and "the last good checkpoint step_00000002 is intact" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"]

    def full(self, *a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)  # the final model: after the last step
    line = one_line(mdm_here("train", cfg))
    assert f"{run}: no space left on the device to write the final model (about " in line
    assert "the last good checkpoint step_00000006 is intact" in line, line
    assert not (run / "model").exists() and not (run / ".tmp-model").exists() and not (run / "result.json").exists()
    monkeypatch.undo()
    assert mdm_here("train", cfg).returncode == 0
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 8 and result["resumed_from"] == [2, 6] and log_steps(run) == list(range(1, 9))


# ---------------------------------------------------------------- (b) a device the machine does not have


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache) -> Path:
    """A finished tiny run (in-process)."""
    tmp = tmp_path_factory.mktemp("trained")
    run = tmp / "run"
    assert mdm_here("train", config(tmp, cache, write_jsonl(tmp / "d.jsonl", rows()), run)).returncode == 0
    return run


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_an_unavailable_device_is_one_line(trained):
    assert one_line(mdm_here("eval", trained, "--device", "cuda")) == (
        "mdm eval: error: --device: cuda: not available on this machine (this torch is built without CUDA); use "
        "--device cpu" if torch.version.cuda is None else
        "mdm eval: error: --device: cuda: not available on this machine (no CUDA GPU is visible); use --device cpu")
    assert one_line(mdm_here("generate", trained, "--device", "cuda:1", "--prompt", "1+1")).startswith(
        "mdm generate: error: --device: cuda:1: not available on this machine")
    assert one_line(mdm_here("eval", trained, "--device", "tpu")) == \
        "mdm eval: error: --device: unknown device 'tpu'; allowed: cpu, cuda, cuda:N, mps"


# ---------------------------------------------------------------- (c) one process per run folder


@pytest.mark.slow  # ~20 s: an `mdm train` process, and one more on its folder meanwhile
def test_two_trains_on_one_folder_one_runs_the_other_names_the_holder(tmp_path, cache):
    run = tmp_path / "run"
    cfg = config(tmp_path, cache, write_jsonl(tmp_path / "d.jsonl", rows()), run, max_steps=60, checkpoint_every=5)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.Popen([sys.executable, "-m", "mdm.cli", "train", str(cfg)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / ".owner.json").is_file():  # the first holds the folder
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.2)
        second = mdm_here("train", cfg)  # in this process: the same CLI, no second torch import
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    line = one_line(second)
    assert line.startswith(f"mdm train: error: {run}: in use by another mdm train (pid {first.pid} on ") and \
        "wait for it to finish" in line, line
    assert first.returncode == 0 and "Traceback" not in err and "done in 60 steps" in out, err
    assert json.loads((run / "result.json").read_text())["steps"] == 60 and log_steps(run) == list(range(1, 61))
    assert not (run / ".owner.json").exists()  # released
    assert mdm_here("train", cfg).stdout.startswith("mdm train: already done")  # free again


# ---------------------------------------------------------------- (d), (e) null and empty responses


def test_null_responses_are_dropped_and_counted_and_all_empty_is_refused(tmp_path, cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = rows(75)
    for r in items[::4]:
        r["response"] = None  # 19 of 75, as in the parquet
    pq.write_table(pa.Table.from_pylist(items), tmp_path / "nulls.parquet")
    run = tmp_path / "nulls"
    out = mdm_here("train", config(tmp_path, cache, tmp_path / "nulls.parquet", run))
    assert out.returncode == 0, out.stderr
    note = [line for line in out.stderr.splitlines() if "dropped" in line]
    assert note == [f"nulls: data: {tmp_path}/nulls.parquet: dropped 19 of 75 rows: null response (19) (the rule: a "
                    "row with a null or empty response, or a null prompt, is dropped)"], out.stderr
    assert json.loads((run / "result.json").read_text())["n_train"] + \
        json.loads((run / "result.json").read_text())["n_heldout"] == 56  # "None" is never trained on

    empty = write_jsonl(tmp_path / "empty.jsonl", [r | {"response": "  "} for r in rows(20)])
    line = one_line(mdm_here("train", config(tmp_path, cache, empty, tmp_path / "empty")))
    assert line == (f"mdm train: error: data.options.path: {empty}: all 20 rows have a null or empty response or "
                    "prompt (empty response (20); response column 'response'): nothing to train or score on")
    assert not (tmp_path / "empty").exists()  # refused before training: no run folder
    mostly = write_jsonl(tmp_path / "mostly.jsonl", [r | {"response": None if i % 3 else r["response"]}
                                                     for i, r in enumerate(rows(30))])
    assert "20 of 30 rows have a null or empty response" in one_line(
        mdm_here("train", config(tmp_path, cache, mostly, tmp_path / "mostly")))


# ---------------------------------------------------------------- (f) a 10 MB row


@pytest.mark.slow  # ~15 s: a fresh `mdm train` process, interrupted with SIGINT
def test_a_10mb_row_is_dropped_in_seconds_and_ctrl_c_works(tmp_path, cache):
    items = rows(60)
    items.insert(7, {"prompt": "7 " * 5_000_000, "response": "7"})  # one 10 MB line
    data = write_jsonl(tmp_path / "big.jsonl", items)
    run = tmp_path / "run"
    cfg = config(tmp_path, cache, data, run, max_steps=100_000, checkpoint_every=None)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONFAULTHANDLER": "1"}
    start = time.time()
    # SIGINT as in a terminal's foreground job: a test runner started in the background (`.ci/run &`) ignores it, and
    # an ignored signal stays ignored in every child (Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-m", "mdm.cli", "train", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = []
        for line in proc.stderr:  # the drop is reported at setup, before the first step
            seen.append(line)
            if "longer than max_length" in line:
                break
        took = time.time() - start
        assert seen and "1 of 61 examples are longer than max_length=64 tokens: dropped" in seen[-1], seen
        assert took < 120, took  # silent for 300 s+ before; ~20 s here (mostly imports), more on a loaded machine
        time.sleep(1.0)  # training now
        proc.send_signal(signal.SIGINT)
        t0 = time.time()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # where it hangs: faulthandler (PYTHONFAULTHANDLER) dumps every stack
            proc.send_signal(signal.SIGABRT)
            pytest.fail(f"no exit 60 s after SIGINT; stacks: {proc.communicate(timeout=60)[1][-6000:]}")
        assert time.time() - t0 < 30  # ~5 s (SIGINT did not stop it before)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "mdm train: interrupted", err


def test_rows_are_measured_before_they_are_tokenized(monkeypatch):
    from mdm.data import build_tokenizer, collate, tokenize_examples

    tok = build_tokenizer([r["prompt"] + r["response"] for r in rows(100)], vocab_size=300)
    bound = 32 * collate.max_token_chars(tok)
    fits = {"prompt": "1", "response": "2"}
    long = {"prompt": "x" * bound, "response": "2"}  # one character over the bound
    seen = []
    real = collate.tokenize_example
    monkeypatch.setattr(collate, "tokenize_example", lambda t, ex, spec: seen.append(ex) or real(t, ex, spec))
    kept, dropped = tokenize_examples(tok, [fits, long], "dataset", 32)
    assert (len(kept), dropped, seen) == (1, 1, [fits])  # the long row is never tokenized
    assert len(tok(long["prompt"] + long["response"])["input_ids"]) > 32  # and it could not have fit
