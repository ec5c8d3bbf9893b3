"""Two presets of one spec never share records: each preset has its own records folder, and a record written by
another preset or another configuration is never counted done (the dry-run says `stale`, `mdm bench` refuses it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mdm.bench.spec import expand, load_spec, records_root
from mdm.cli import main
from mdm.io import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[2]

SPEC = {
    "name": "t",
    "seeds": [1],
    "methods": ["standard", "mirror"],
    "presets": {
        "tiny": {"tasks": {"arith": {"n_train": 64, "max_length": 128}}, "model": {"size": {"hidden_size": 32}},
                 "training": {"max_steps": 3, "global_batch_size": 8, "micro_batch_size": 4}},
        "paper": {"tasks": {"arith": {"n_train": 64, "max_length": 128}}, "model": {"size": {"hidden_size": 64}},
                  "training": {"max_steps": 30, "global_batch_size": 8, "micro_batch_size": 4}},
    },
}


def fake_done(run, preset: str | None = None) -> None:
    """What a finished run leaves for the plan: its run_config.json (the trajectory it trained) and a done record."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.run_dir / "run_config.json", {"trajectory": run.config.trajectory_dict(),
                                                       "config": run.config.model_dump(mode="json")})
    atomic_write_json(run.record_path, {"benchmark": run.bench, "preset": preset or run.preset, "task": run.task,
                                        "method": run.method, "seed": run.seed, "status": "done"})


def dry_run(path, results, capsys, preset="paper") -> list[str]:
    assert main(["bench", str(path), "--preset", preset, "--dry-run", "--results", str(results)]) == 0
    return capsys.readouterr().out.splitlines()


def statuses(lines: list[str]) -> list[str]:
    return [line.split()[5] for line in lines if line.strip()[:1].isdigit()]


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_each_preset_has_its_own_records_folder(spec_file, tmp_path):
    spec = load_spec(spec_file)
    tiny, paper = expand(spec, "tiny", tmp_path / "r"), expand(spec, "paper", tmp_path / "r")
    assert tiny[0].run_dir == tmp_path / "r" / "t" / "arith" / "standard" / "seed1"  # the committed layout
    assert paper[0].run_dir == tmp_path / "r" / "t@paper" / "arith" / "standard" / "seed1"
    assert not {r.run_dir for r in tiny} & {r.run_dir for r in paper}
    assert records_root("x", "t", "paper") == Path("x/t@paper")


def test_a_tiny_record_does_not_make_the_paper_plan_done(spec_file, tmp_path, capsys):
    results = tmp_path / "r"
    spec = load_spec(spec_file)
    for run in expand(spec, "tiny", results):
        fake_done(run)
    assert statuses(dry_run(spec_file, results, capsys, "tiny")) == ["done", "done"]
    lines = dry_run(spec_file, results, capsys)
    assert statuses(lines) == ["pending", "pending"]
    assert next(line for line in lines if line.startswith("to run:")).startswith("to run: 2 runs")
    # a tiny record inside the paper preset's folder (e.g. copied there, or an older layout): stale, never done
    paper = expand(spec, "paper", results)
    shutil.copytree(expand(spec, "tiny", results)[0].run_dir, paper[0].run_dir)
    lines = dry_run(spec_file, results, capsys)
    assert statuses(lines) == ["stale", "pending"]
    assert any(f"{paper[0].run_dir}: a record of preset 'tiny', not 'paper'" in line for line in lines)
    assert next(line for line in lines if line.startswith("to run:")).startswith("to run: 2 runs")
    # and the run refuses it before any compute, naming the folder and the way out
    code = main(["bench", str(spec_file), "--preset", "paper", "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2 and "another configuration (first difference: a record of preset 'tiny'" in err
    assert "--rerun-stale" in err and "Traceback" not in err
    assert read_json(paper[0].record_path)["preset"] == "tiny"  # untouched


def test_a_record_of_another_configuration_of_the_same_preset_is_stale_in_the_dry_run(spec_file, tmp_path, capsys):
    results = tmp_path / "r"
    for run in expand(load_spec(spec_file), "tiny", results):
        fake_done(run)
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({**SPEC, "presets": {**SPEC["presets"], "tiny": {
        **SPEC["presets"]["tiny"], "training": {**SPEC["presets"]["tiny"]["training"], "max_steps": 4}}}}))
    lines = dry_run(edited, results, capsys, "tiny")
    assert statuses(lines) == ["stale", "stale"]
    assert any("training.max_steps" in line and "--rerun-stale" in line for line in lines)


def test_the_committed_tiny_records_are_not_the_paper_presets(capsys, monkeypatch):
    """On a fresh clone: table2's tiny records are done for the tiny preset, and the paper plan runs all 12."""
    monkeypatch.chdir(ROOT)
    spec = ROOT / "benchmarks" / "table2.yaml"
    assert statuses(dry_run(spec, "results/runs", capsys, "tiny")) == ["done"] * 12
    lines = dry_run(spec, "results/runs", capsys, "paper")
    assert statuses(lines) == ["pending"] * 12
    assert next(line for line in lines if line.startswith("to run:")).startswith("to run: 12 runs")
