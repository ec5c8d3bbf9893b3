"""`mdm report` reproduces the paper's averages and its synergy claim from the per-seed reference CSV."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mdm.errors import ConfigError
from mdm.report import leaderboard, load_scores, synergy

REF = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
TABLE1 = REF / "paper_table1.csv"


@pytest.fixture(scope="module")
def table1():
    return load_scores([TABLE1])


def test_paper_averages(table1):
    board = leaderboard(table1).set_index(["method", "task"])
    mdm = board[board.model_family == "mdm"]
    assert mdm.loc[("ppots+mirror", "gsm8k"), "mean"] == pytest.approx(60.53, abs=0.005)
    assert mdm.loc[("standard", "gsm8k"), "mean"] == pytest.approx(52.513, abs=0.001)
    assert mdm.loc[("ppots+mirror", "gsm8k"), "best"]
    gains = {t: mdm.loc[("ppots+mirror", t), "mean"] - mdm.loc[("standard", t), "mean"]
             for t in ("openscience", "gsm8k", "hitab")}
    assert gains == pytest.approx({"openscience": 7.01, "gsm8k": 8.02, "hitab": 8.42}, abs=0.01)
    std = mdm.loc[("standard", "hitab")]
    assert std["std"] == pytest.approx(pd.Series([52.96, 60.43, 62.64]).std(), abs=1e-6)
    assert std["range"] == pytest.approx(62.64 - 52.96)
    arm = board[board.is_arm]
    assert set(arm.model_family) == {"arm:qwen2.5-7b-instruct", "arm:qwen3-8b-base", "arm:llama3.1-8b-instruct"}


def test_paper_synergy_claim_on_gsm8k(table1):
    row = synergy(table1).set_index(["task", "combination"]).loc[("gsm8k", "ppots+mirror")]
    assert row.gain_combination == pytest.approx(8.02, abs=0.005)
    assert row.sum_of_gains == pytest.approx(7.26, abs=0.005)
    assert row.synergy > 0 and row.synergy_ci95_lo < row.synergy < row.synergy_ci95_hi


def test_table2_clip_gain():
    df = load_scores([REF / "paper_table2.csv"])
    board = leaderboard(df).set_index("method")
    assert board.loc["ppots+mirror", "mean"] - board.loc["standard", "mean"] == pytest.approx(3.23, abs=0.01)


def test_cli_writes_the_report_folder(tmp_path):
    subprocess.run([sys.executable, "-m", "mdm.cli", "report", str(TABLE1), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("leaderboard.md", "leaderboard.csv", "synergy.md", "synergy.csv", "README.md", "scores_gsm8k.png"):
        assert (tmp_path / name).is_file(), name
    assert "(best)" in (tmp_path / "leaderboard.md").read_text()


def test_bad_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("method,score\nx,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        load_scores([bad])
    out = subprocess.run([sys.executable, "-m", "mdm.cli", "report", str(tmp_path / "nope.txt"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 2 and "not a run-records folder" in out.stderr and "Traceback" not in out.stderr


def test_the_same_scores_give_byte_identical_plots(tmp_path):
    """Seaborn bootstraps the CI and jitters the dots at random: both are seeded, so reruns change no file."""
    import numpy as np

    from mdm.report.render import write_report

    df = load_scores([TABLE1])
    for name in ("a", "b"):
        np.random.seed({"a": 1, "b": 123}[name])  # whatever state the caller left behind
        write_report(df, tmp_path / name, "table1")
    pngs = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert pngs and all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in pngs)


def test_an_empty_folder_is_one_line_and_a_truncated_record_is_skipped_by_name(tmp_path):
    import hashlib
    import json

    def report(root):
        return subprocess.run([sys.executable, "-m", "mdm.cli", "report", str(root), "--out", str(tmp_path / "out")],
                              capture_output=True, text=True)

    (tmp_path / "empty").mkdir()
    out = report(tmp_path / "empty")
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "empty: no runs here" in out.stderr

    runs = tmp_path / "runs" / "b"
    for method, seed, score in (("standard", 1, 20.0), ("standard", 2, 22.0), ("mirror", 1, 30.0), ("mirror", 2, 31.0)):
        path = runs / "arith" / method / f"seed{seed}" / "record.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"benchmark": "b", "task": "arith", "method": method, "seed": seed,
                                    "model_family": "mdm", "status": "done", "metrics": {"score": score}}))
    cut = runs / "arith" / "mirror" / "seed2" / "record.json"
    cut.write_text(cut.read_text()[:40])
    before = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in runs.rglob("record.json")}
    out = report(runs)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"mdm report: skipped {cut}: not valid JSON (Unterminated string starting at, line 1)"
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index("method")
    assert board.loc["mirror", "n_seeds"] == 1 and board.loc["standard", "n_seeds"] == 2
    assert {p: hashlib.md5(p.read_bytes()).hexdigest() for p in runs.rglob("record.json")} == before
