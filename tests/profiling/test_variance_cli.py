"""`mdm variance` and `mdm fit-ppots` end to end on a very small spec, and their input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mdm.cli import main
from mdm.objective import Method
from mdm.objective.components.t_samplers import GridDensity

pytestmark = pytest.mark.usefixtures("one_thread")


SPEC = {
    "name": "cli-test",
    "seed": 0,
    "data": {"task": "arith", "n_train": 120, "max_length": 96},
    "model": {"vocab_size": 512, "tokenizer_examples": 200, "base": "auto",
              "pretrain": {"n_examples": 120, "max_steps": 3, "global_batch_size": 4, "micro_batch_size": 4},
              "size": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 64}},
    "pilot": {"a": 3, "b": 10, "c": 2, "bootstrap": 20, "token_budget": 4096},
    "fit": {"restarts": 3},
    "gradient": {"projection": 16, "a": 2, "b": 3, "c": 2},
}


@pytest.fixture
def spec_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MDM_CACHE", str(tmp_path / "cache"))

    def write(**overrides):
        spec = json.loads(json.dumps(SPEC))
        for section, values in overrides.items():
            spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        return str(path)

    return write


def test_variance_writes_the_json_and_the_plot(spec_file, tmp_path):
    out = tmp_path / "out"
    argv = ["variance", "--config", spec_file(), "--methods", "standard,mirror,ppots,strats,arm", "--out",
            str(out), "--no-progress"]
    assert main(argv) == 0
    result = json.loads((out / "variance.json").read_text())
    assert (out / "variance.png").stat().st_size > 0
    assert {"methods", "a", "b", "c", "model", "data", "seed"} <= set(result)
    assert (result["a"], result["b"], result["c"]) == (3, 10, 2)
    for name in ("standard", "mirror", "ppots", "strats", "arm"):
        entry = result["methods"][name]
        for key in ("A", "B", "C", "total", "A_se", "B_se", "C_se", "total_se", "t", "g", "v", "A_by_t"):
            assert key in entry, (name, key)
        assert len(entry["t"]) == len(entry["g"]) == len(entry["v"]) == len(entry["A_by_t"]) == 10
    assert result["methods"]["arm"]["A"] == 0 and result["methods"]["arm"]["B"] == 0
    assert result["ppots_density"].startswith("fitted")
    # the model is the run's cached tiny base (mdm train's model.base: auto, 3 pretraining steps)
    base = Path(result["base"]["path"])
    assert result["model"] == f"tiny base {base.name}" and len((base / "pretrain_log.jsonl").read_text().splitlines())
    built = (base / "config.json").stat().st_mtime_ns
    # a second run reuses the base and reproduces the numbers
    assert main(argv[:-1] + ["--no-progress"]) == 0
    again = json.loads((out / "variance.json").read_text())
    assert (base / "config.json").stat().st_mtime_ns == built
    assert again["methods"]["standard"]["total"] == result["methods"]["standard"]["total"]


def test_fit_ppots_writes_a_density_the_ppots_sampler_loads(spec_file, tmp_path):
    out = tmp_path / "fit"
    assert main(["fit-ppots", "--config", spec_file(), "--out", str(out), "--mix", "0.1", "--no-progress"]) == 0
    artifact = json.loads((out / "ppots.json").read_text())
    assert (out / "ppots.png").stat().st_size > 0
    assert artifact["pilot"] == {**artifact["pilot"], "a": 3, "b": 10, "c": 2}
    assert artifact["mix"] == 0.1 and artifact["family"] in ("epr", "empirical")
    assert {"model", "data", "grid", "density", "fit", "predicted"} <= set(artifact)
    d = GridDensity.load(str(out / "ppots.json"))
    assert np.all(np.isfinite(d.p.numpy())) and d.p.min() > 0
    method = Method.build({"preset": "ppots+mirror", "t_sampler": {"density": str(out / "ppots.json")}})
    assert method.t_sampler.density.flat is False


def test_gradient_mode_from_the_cli(spec_file, tmp_path):
    out = tmp_path / "grad"
    assert main(["variance", "--config", spec_file(), "--methods", "standard,mirror", "--gradient", "--out",
                 str(out), "--no-progress"]) == 0
    result = json.loads((out / "variance.json").read_text())
    assert result["mode"] == "gradient" and (result["a"], result["b"], result["c"]) == (2, 3, 2)
    assert result["methods"]["standard"]["A"] > 0


@pytest.mark.parametrize("argv,overrides,message", [
    (["--a", "1"], {}, "must be >= 2: C is a variance over clean sequences"),
    (["--c", "1"], {}, "must be >= 2: A is a variance over masks"),
    (["--methods", "standard,mirorr"], {}, "unknown method 'mirorr'"),
    ([], {"data": {"max_length": 8}}, "longer than max_length=8"),
    ([], {"pilot": {"bogus": 1}}, "pilot.bogus: unknown key"),
    ([], {"pilot": {"a": 500}}, "asks for 500 clean sequences"),
])
def test_bad_inputs_exit_2_with_one_line(spec_file, tmp_path, capsys, argv, overrides, message):
    code = main(["variance", "--config", spec_file(**overrides), "--out", str(tmp_path / "o"), "--no-progress",
                 "--methods", "standard", *argv])  # a repeated option: the last one wins
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_empty_dataset_and_coarse_grid_are_clear_errors(spec_file, tmp_path, capsys):
    empty = tmp_path / "gsm8k"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    assert main(["variance", "--config", spec_file(data={"task": "gsm8k", "options": {"root": str(empty)}}), "--out",
                 str(tmp_path / "o"), "--no-progress", "--methods", "standard"]) == 2
    assert "has no training examples" in capsys.readouterr().err
    assert main(["fit-ppots", "--config", spec_file(), "--b", "6", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "grid too coarse: 6 t values" in capsys.readouterr().err
    assert main(["variance", "--config", spec_file(), "--b", "6", "--methods", "standard,ppots", "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    assert "grid too coarse to fit P-POTS: 6 t values" in capsys.readouterr().err


def test_unwritable_out_and_a_missing_density_are_one_line_before_loading_the_model(spec_file, tmp_path):
    import os
    import subprocess
    import sys

    def mdm(*args):
        env = {**os.environ, "MDM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-m", "mdm.cli", *args, "--config", spec_file(), "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=120)

    (tmp_path / "file").write_text("")
    cases = [(mdm("fit-ppots", "--out", str(tmp_path / "file" / "o")), "mdm fit-ppots: error: --out: ",
              "file/o: cannot create the folder (Not a directory)"),
             (mdm("variance", "--methods", "standard,ppots", "--ppots-density", str(tmp_path / "nope.json"), "--out",
                  str(tmp_path / "o")), "mdm variance: error: --ppots-density: ", "nope.json: cannot read the P-POTS "
              "density (No such file or directory; write one with mdm fit-ppots)")]
    for out, prefix, message in cases:
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1 and out.stderr.startswith(prefix) and message in out.stderr, out.stderr
    assert not (tmp_path / "cache").exists()  # no model was built or loaded
