"""Training tools: LoRA (peft), experiment trackers (TensorBoard), plain progress lines off a terminal, and the
variance profiler's gradient mode on a LoRA run's adapters."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from mdm.errors import ConfigError
from mdm.train import RunConfig, Trainer, load_run_config, read_log
from tests.cli.test_cli_methods import _imports_of
from tests.train.test_train import tiny_run, trajectory

pytestmark = pytest.mark.usefixtures("one_thread")

LORA = {"lora": {"r": 4, "alpha": 8, "dropout": 0.1}}


def lora_cfg(out, cache, **over) -> dict:
    return tiny_run(out, cache, training__peft=LORA, training__lr=1e-2, training__max_steps=8,
                    training__checkpoint_every=3, training__report_to=["tensorboard"], **over)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mdm-cache")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache):
    """One LoRA run with TensorBoard, with its weights and the logits of a fixed input just before the merge."""
    from mdm.train.model import build_model

    out = tmp_path_factory.mktemp("lora") / "run"
    cfg = RunConfig.model_validate(lora_cfg(out, cache))
    initial = {n: p.detach().clone() for n, p in build_model(cfg)[0].named_parameters()}
    seen, finish = {}, Trainer._finish
    probe = torch.arange(3, 19).reshape(2, 8)

    def spy(self, status, reason=""):
        seen["params"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        seen["requires_grad"] = {n for n, p in self.model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            seen["logits"] = self.adapter.logits(self.model.eval(), probe)
        return finish(self, status, reason)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_finish", spy)
        result = Trainer(cfg).train()
    return {"dir": out, "cfg": cfg, "result": result, "log": read_log(out), "initial": initial, "probe": probe,
            **seen}


def test_lora_trains_only_the_adapters_and_saves_a_plain_merged_model(lora_run):
    from mdm.adapters import checked, load_model

    result, log, initial, params = lora_run["result"], lora_run["log"], lora_run["initial"], lora_run["params"]
    assert result["status"] == "done" and result["peft"] == "lora"
    assert 0 < result["trainable_params"] < result["model_params"] / 4
    lora = {n for n in params if ".lora_" in n}
    assert lora == lora_run["requires_grad"] and lora
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"}  # the default targets; never the (tied) lm_head
    for name, p in params.items():  # the backbone is byte-identical to the start, every adapter has moved
        if name in lora:
            assert float(p.abs().max()) > 0, name  # lora_B starts at zero
        else:
            assert torch.equal(p, initial[name.replace(".base_layer", "")]), name
    losses = [e["loss"] for e in log]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3])

    run = lora_run["dir"]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run / "model" / "adapter_config.json").exists()  # model/ is a plain checkpoint
    model, _ = load_model(run / "model", causal=None, dtype=torch.float32)
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        merged = checked(model).logits(model.eval(), lora_run["probe"])
    torch.testing.assert_close(merged, lora_run["logits"], rtol=1e-4, atol=1e-4)  # merged = base + adapter


def test_mdm_eval_decodes_the_lora_run(lora_run):
    from mdm.eval.api import evaluate_run

    out = evaluate_run(lora_run["dir"], {"n": 2, "gen_length": 8, "steps": 4, "block_length": 8, "t_grid": 2,
                                         "likelihood": False, "batch_size": 2})
    assert out["tasks"]["arith"]["n"] == 2 and out["tasks"]["arith"]["model_kind"] == "mdm"


@pytest.mark.numerics
def test_lora_run_with_trackers_resumes_bit_identically(lora_run, tmp_path, cache, monkeypatch):
    original = Trainer.train_step

    def dies_at_step_5(self, step):
        if step == 4:
            raise KeyboardInterrupt
        return original(self, step)

    cfg = RunConfig.model_validate(lora_cfg(tmp_path / "cut", cache))
    monkeypatch.setattr(Trainer, "train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg).train()
    monkeypatch.setattr(Trainer, "train_step", original)
    result = Trainer(cfg).train()
    assert result["resumed_from"] == [3]
    assert trajectory(read_log(tmp_path / "cut")) == trajectory(lora_run["log"])
    assert (tmp_path / "cut" / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (lora_run["dir"] / "adapter" / "adapter_model.safetensors").read_bytes()


def test_tensorboard_event_file_holds_the_train_loss_per_step(lora_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = lora_run["dir"] / "trackers" / "run"
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    loss = events.Scalars("train/loss")
    log = lora_run["log"]
    assert [e.step for e in loss] == [e["step"] for e in log]
    assert [e.value for e in loss] == pytest.approx([e["loss"] for e in log], rel=1e-6)  # stored as float32
    for tag in ("train/lr", "train/grad_norm", "train/passes_seen", "train/tokens_seen", "final/heldout_loss"):
        assert tag in events.Tags()["scalars"], tag


def test_unknown_tracker_missing_package_and_unmatched_lora_targets_are_one_line_errors(tmp_path, cache, monkeypatch):
    import importlib.util

    def run_yaml(**over):
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(tiny_run(tmp_path / "run", cache, **over)))
        return path

    with pytest.raises(ConfigError, match=r"training.report_to: unknown tracker 'tensorbord'; allowed: tensorboard, wandb"):
        load_run_config(run_yaml(training__report_to=["tensorbord"]))
    heavy, rc, err = _imports_of("train", str(run_yaml(training__report_to=["tensorbord"])))  # the CLI: one line
    assert rc == "2" and heavy == [] and len(err.strip().splitlines()) == 1 and "unknown tracker" in err, err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"training.report_to: tracker 'wandb' needs .*pip install wandb"):
        load_run_config(run_yaml(training__report_to=["wandb"]))
    for names, bad in ((["q_proj", "qkv"], "'qkv' matches"), (["lm_head"], "'lm_head' matches")):
        cfg = RunConfig.model_validate(tiny_run(tmp_path / "run", cache, training__peft={"lora": {"target_modules": names}}))
        with pytest.raises(ConfigError, match=rf"training.peft.lora.target_modules: {bad} no Linear layer of "
                           r"Gemma3ForCausalLM \(the output layer is never adapted\); its Linear layers: q_proj, k_proj"):
            Trainer(cfg).train()
        assert not (tmp_path / "run").exists()  # nothing trained, no folder left

    def trajectory_of(**over):
        return RunConfig.model_validate(tiny_run(tmp_path / "run", cache, **over)).trajectory_dict()

    assert trajectory_of(training__report_to=["tensorboard"], training__log_every=3) == trajectory_of()
    assert "peft" not in trajectory_of()["training"]  # old run folders (no peft key) still match a full fine-tune
    assert trajectory_of(training__peft=LORA)["training"]["peft"]["lora"]["r"] == 4


def test_mdm_train_off_a_terminal_prints_plain_progress_lines(tmp_path, cache, capsys):
    from mdm.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run(tmp_path / "run", cache, training__progress=True,
                                            training__log_every=2)))
    assert main(["train", str(path)]) == 0  # the CLI in-process: stderr is pytest's capture, not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("run: step ")]
    assert [line.split()[2] for line in lines] == ["2/4", "4/4"], err
    assert all(", loss " in line and ", elapsed " in line and ", eta " in line for line in lines)


def test_variance_gradient_mode_on_the_lora_factors(lora_run, tmp_path, monkeypatch, capsys):
    from mdm.cli import main

    monkeypatch.setenv("MDM_CACHE", str(tmp_path / "cache"))
    spec = {"data": {"task": "arith", "n_train": 120, "max_length": 128}, "model": {"base": str(lora_run["dir"] / "model")},
            "pilot": {"a": 3, "b": 10, "c": 2, "bootstrap": 10}, "gradient": {"params": "lora", "projection": 16,
                                                                              "a": 2, "b": 3, "c": 2}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["variance", "--config", str(path), "--methods", "standard,mirror", "--gradient", "--out",
                 str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err  # stderr is not a terminal here: plain lines, no bars
    assert "\r" not in err and "pilot standard: row 12/12 (100%)" in err and "pilot mirror: row 12/12" in err
    result = json.loads((tmp_path / "out" / "variance.json").read_text())
    modules = result["gradient"]["modules"]
    assert result["mode"] == "gradient" and modules and all(".lora_" in m for m in modules)
    assert result["gradient"]["parameters"] == lora_run["result"]["trainable_params"]
    assert result["methods"]["standard"]["total"] > 0

    spec["model"] = {"base": "auto"}  # no run folder: no LoRA run to profile
    path.write_text(yaml.safe_dump(spec))
    assert main(["variance", "--config", str(path), "--methods", "standard", "--gradient", "--out", str(tmp_path / "o2"),
                 "--no-progress"]) == 2
    assert "gradient.params: 'lora' profiles a LoRA run" in capsys.readouterr().err


def test_plain_progress_prints_about_ten_lines_and_wandb_goes_offline_without_a_key(tmp_path, monkeypatch):
    import io

    from mdm.progress import PlainProgress, progress
    from mdm.train.trackers import init_kwargs

    out = io.StringIO()
    bar = progress(95, "pilot", unit="row", file=out)
    assert isinstance(bar, PlainProgress)
    for _ in range(19):
        bar.update(5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("pilot: row 95/95 (100%), elapsed ")
    assert not isinstance(progress(10, "x", enabled=False, file=out), PlainProgress)

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert init_kwargs(["wandb"], tmp_path) == {"wandb": {"dir": str(tmp_path / "trackers")}}
    import os

    assert os.environ["WANDB_MODE"] == "offline"
