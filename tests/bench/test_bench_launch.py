"""The 8B launch before any compute: a DeepSpeed launch without DeepSpeed is one line (`mdm bench`; a direct
`accelerate launch` is refused by accelerate's own launcher);
a spec's accelerate config is found from the spec's folder, whatever the working directory."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from mdm.bench.runner import DEEPSPEED_MISSING, require_deepspeed
from mdm.bench.spec import resolve_launch
from mdm.cli import main
from mdm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ZERO2 = ROOT / "benchmarks" / "accelerate" / "deepspeed_zero2.yaml"
SPEC = {"name": "t", "seeds": [1], "methods": ["standard"],
        "presets": {"tiny": {"tasks": {"arith": {"n_train": 64, "max_length": 128}},
                             "training": {"max_steps": 1, "global_batch_size": 8, "micro_batch_size": 4},
                             "launch": {"config_file": "accelerate/zero2.yaml", "num_processes": 2}}}}


def _no_deepspeed(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # `import deepspeed` raises ImportError


def _spec_folder(tmp_path) -> Path:
    """<tmp>/repo/benchmarks/t.yaml naming accelerate/zero2.yaml, which lies in <tmp>/repo/accelerate/."""
    bench = tmp_path / "repo" / "benchmarks"
    bench.mkdir(parents=True)
    (tmp_path / "repo" / "accelerate").mkdir()
    (tmp_path / "repo" / "accelerate" / "zero2.yaml").write_text(ZERO2.read_text())
    (bench / "t.yaml").write_text(yaml.safe_dump(SPEC))
    return bench / "t.yaml"


def test_require_deepspeed(monkeypatch):
    _no_deepspeed(monkeypatch)
    with pytest.raises(ConfigError) as e:
        require_deepspeed("here")
    assert str(e.value) == f"here: {DEEPSPEED_MISSING}" and "pip install 'mdm[deepspeed]'" in str(e.value)
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    require_deepspeed("here")  # installed: nothing to say


def test_bench_deepspeed_launch_without_deepspeed_is_one_line_before_compute(tmp_path, monkeypatch, capsys):
    import mdm.bench.runner
    import mdm.train.model

    _no_deepspeed(monkeypatch)
    monkeypatch.setattr(mdm.bench.runner.subprocess, "run", lambda *a, **k: pytest.fail("launched"))
    monkeypatch.setattr(mdm.train.model, "build_model", lambda *a, **k: pytest.fail("a model was loaded"))
    spec = _spec_folder(tmp_path)
    assert main(["bench", str(spec), "--results", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"mdm bench: error: {spec}: presets.tiny.launch.config_file: {DEEPSPEED_MISSING}"
    assert not (tmp_path / "runs").exists()


def test_launch_path_is_independent_of_the_working_directory(tmp_path, monkeypatch):
    import mdm.bench.runner

    spec = _spec_folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # neither the spec's folder nor the repo root
    assert resolve_launch("accelerate/zero2.yaml", str(spec), "w") == tmp_path / "repo" / "accelerate" / "zero2.yaml"
    with pytest.raises(ConfigError) as e:
        resolve_launch("accelerate/nope.yaml", str(spec), "w")
    assert e.value.where == "w" and e.value.problem.startswith("no such file 'accelerate/nope.yaml'")
    # the runner launches with the resolved path (DeepSpeed present: a stub module)
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    seen = []
    real_run = subprocess.run
    monkeypatch.setattr(mdm.bench.runner.subprocess, "run",
                        lambda cmd, *a, **k: real_run(cmd, *a, **k) if "accelerate.commands.launch" not in cmd
                        else seen.append(cmd) or subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(SystemExit) as exit_:  # the stub launch writes no result: the run fails
        main(["bench", str(spec), "--results", str(tmp_path / "runs")])
    assert exit_.value.code == 1
    cmd = seen[0]
    config_file = Path(cmd[cmd.index("--config_file") + 1])
    assert config_file.is_absolute() and config_file == tmp_path / "repo" / "accelerate" / "zero2.yaml"
    assert cmd[cmd.index("--num_processes") + 1] == "2"


def test_shipped_presets_name_their_launch_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(ROOT / "benchmarks" / "table1.yaml"), "--preset", "paper", "--dry-run", "--results",
                 str(tmp_path), "--only", "task=gsm8k,method=standard,family=mdm"]) == 0
    assert f"DeepSpeed ZeRO-2 ({ZERO2})" in capsys.readouterr().out


def test_pretrained_weights_load_in_bf16_only_inside_a_deepspeed_bf16_launch(tmp_path, monkeypatch):
    import torch

    from mdm.train.config import RunConfig
    from mdm.train.model import build_model, load_dtype

    size = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 16, "intermediate_size": 64}

    def cfg(**model):
        return RunConfig.model_validate({
            "model": {"size": size, "tokenizer_examples": 50, "vocab_size": 128, "cache_dir": str(tmp_path / "c"),
                      **model},
            "data": {"task": "arith", "n_train": 64}, "training": {"bf16": True}, "output_dir": str(tmp_path / "r")})

    model, tokenizer = build_model(cfg())  # a tiny model built from its size is float32 whatever the launch
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    from_base = cfg(base=str(tmp_path / "saved"))
    assert load_dtype(from_base) == torch.float32 and \
        {p.dtype for p in build_model(from_base)[0].parameters()} == {torch.float32}
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert {p.dtype for p in build_model(from_base)[0].parameters()} == {torch.bfloat16}
    off = from_base.model_copy(update={"training": from_base.training.model_copy(update={"bf16": False})})
    assert load_dtype(off) == torch.float32  # DeepSpeed without bf16 trains in fp32


def test_launch_option_is_for_dry_runs_only(tmp_path, capsys):
    spec = _spec_folder(tmp_path)
    assert main(["bench", str(spec), "--launch", "x.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "mdm bench: error: --launch: only estimates memory with --dry-run; a " \
        "run launches with the preset's launch.config_file (change it with --set launch.config_file=PATH)"
    assert main(["bench", str(spec), "--dry-run", "--launch", str(tmp_path / "no.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"mdm bench: error: {tmp_path / 'no.yaml'}: no such file"
