"""`mdm train` on a user's model folder and cache: `model.source` as a local Hugging Face folder (and the errors of
a missing folder, an empty one, a hub id offline), a tokenizer without a mask token, and a read-only cache. Each
error is one line before any training step, and the run folder stays unclaimed. The CLI runs in this process
(`mdm_here`): a fresh process per case would only add torch's import time (test_train_cli covers that path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.train.test_train import tiny_run
from tests.train.test_train_cli import mdm_here as mdm
from tests.train.test_train_cli import one_line_error, write


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mdm-cache")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, cache) -> Path:
    """A tiny run's saved model folder (config.json + safetensors + tokenizer), as save_pretrained writes it."""
    root = tmp_path_factory.mktemp("source")
    out = mdm("train", write(root / "run.yaml", tiny_run(root / "run", cache)))
    assert out.returncode == 0, out.stderr[-2000:]
    return root / "run" / "model"


def test_model_source_is_a_local_hf_folder(tmp_path, cache, saved_model):
    cfg = tiny_run(tmp_path / "run", cache, model__source=str(saved_model))
    out = mdm("train", write(tmp_path / "run.yaml", cfg))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["metrics"]["heldout_loss"] > 0


@pytest.mark.parametrize("source, fragment", [
    ("{tmp}/nothere", "no such model folder"),
    ("{tmp}/empty", "is not a saved model folder (no config.json)"),
    ("someorg/not-in-the-cache", "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"),
])
def test_a_model_source_that_cannot_load_is_one_line(tmp_path, cache, source, fragment):
    (tmp_path / "empty").mkdir()
    cfg = tiny_run(tmp_path / "run", cache, model__source=source.format(tmp=tmp_path))
    one_line_error(mdm("train", write(tmp_path / "run.yaml", cfg)), "model.source", fragment)
    assert not (tmp_path / "run").exists() or list((tmp_path / "run").iterdir()) == []


def test_a_tokenizer_without_a_mask_token_is_one_line(tmp_path, cache, saved_model):
    folder = tmp_path / "no-mask"
    shutil.copytree(saved_model, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        text = (folder / name).read_text().replace("<|mdm_mask|>", "<|unused0|>")
        (folder / name).write_text(text)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok_cfg.pop("mask_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    config = json.loads((folder / "config.json").read_text())
    config.pop("mask_token_id")
    (folder / "config.json").write_text(json.dumps(config))
    cfg = tiny_run(tmp_path / "run", cache, model__source=str(folder))
    one_line_error(mdm("train", write(tmp_path / "run.yaml", cfg)), "no mask token", "mask_token_id in config.json")
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


def test_a_read_only_cache_is_one_line_before_compute(tmp_path):
    """/sys is read-only even for root (chmod is not: tests run as root in CI)."""
    cfg = tiny_run(tmp_path / "run", "/x")
    del cfg["model"]["cache_dir"]
    out = mdm("train", write(tmp_path / "run.yaml", cfg), env={"MDM_CACHE": "/sys/mdm-cache"})
    one_line_error(out, "MDM_CACHE: /sys/mdm-cache: the cache folder is not writable")
    assert not (tmp_path / "run").exists() or list((tmp_path / "run").iterdir()) == []
