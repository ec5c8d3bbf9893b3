"""Claims and leaderboard on run records: common seeds only, identical rows, the ceiling, Table 2's per-caption
outcomes, and the README's status block regenerated from the committed records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mdm.report import leaderboard, load_scores
from mdm.report.claims import claims
from tests.report.test_report import write_record

ROOT = Path(__file__).resolve().parents[2]


def test_a_3_seed_row_identical_to_standard_on_its_seeds_gets_a_zero_width_interval(tmp_path):
    """EMA (gradient-neutral) ran 3 of Standard's 8 seeds: compared on those 3 it is identical, and its gain is
    exactly 0 with a zero-width interval (the unpaired 3-vs-8 comparison gave -1.33 [-16.96, +18.46])."""
    rng = np.random.default_rng(0)
    easy = rng.random(300) < 0.5
    for seed in range(1, 9):
        level = rng.normal(0.6, 0.15)  # seeds differ a lot: an unpaired comparison would be wide
        outcomes = easy & (rng.random(300) < level)
        write_record(tmp_path, "standard", seed, outcomes, 0.5, 100)
        if seed <= 3:
            write_record(tmp_path, "ema", seed, outcomes, 0.5, 100)
    df = load_scores([tmp_path])
    row = claims(df).set_index("claim").loc["ema improves on Standard"]
    assert (row.ours, row.ci95, row.n_seeds, row.verdict) == (0.0, "[+0.00, +0.00]", 3,
                                                              "identical to Standard (no effect)")
    assert "on the 3 common seeds (runs: standard 8)" in row.detail
    board = leaderboard(df).set_index("method")
    assert board.loc["ema", "gain"] == 0 and board.loc["ema", "gain_ci95"] == "[+0.0, +0.0]"
    assert board.loc["ema", "n_common"] == 3 and board.loc["ema", "note"].startswith("identical to standard")


def test_the_spread_claim_is_not_estimable_at_the_ceiling(tmp_path):
    rng = np.random.default_rng(1)
    for seed in (1, 2, 3, 4):
        write_record(tmp_path, "standard", seed, rng.random(500) < rng.uniform(0.3, 0.5), 0.5, 100)
        run = tmp_path / "arith" / "arm" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "record.json").write_text(json.dumps({
            "benchmark": "t", "model_family": "arm:tiny", "method": "standard", "task": "arith", "seed": seed,
            "status": "done", "metrics": {"score": 99.4 + 0.2 * (seed == 1)}}))
    page = claims(load_scores([tmp_path])).set_index("claim")
    row = page.loc["MDM Standard's seed spread exceeds the ARMs' (SD ratio; ARMs pooled)"]
    assert row.verdict == "not estimable (ceiling)" and np.isnan(row.ours)


def test_table2_runs_are_paired_on_captions_from_their_samples(tmp_path):
    """A text-to-image record keeps no per-prompt file name: its samples.jsonl (caption, checks, clip_score) gives
    the per-caption CLIP scores and attribute checks, so its comparisons pair on captions and seeds."""
    rng = np.random.default_rng(2)
    captions = [f"a red square {i}" for i in range(40)]
    for method, shift in (("standard", 0.0), ("ppots+mirror", 2.0)):
        for seed in (42, 731, 20231):
            run = tmp_path / "text-to-image" / method / f"seed{seed}"
            run.mkdir(parents=True)
            clip = 88 + shift + rng.normal(0, 2, 40)
            ok = rng.random(40) < 0.4 + 0.2 * (shift > 0)
            (run / "samples.jsonl").write_text("".join(json.dumps(
                {"caption": c, "checks": {"all": bool(o)}, "clip_score": float(s)}) + "\n"
                for c, s, o in zip(captions, clip, ok)))
            (run / "record.json").write_text(json.dumps({
                "benchmark": "table2", "model_family": "mdm", "method": method, "task": "text-to-image",
                "seed": seed, "status": "done", "metrics": {"score": float(clip.mean()), "clip_score": float(clip.mean())},
                "eval": {"text-to-image": {"clip": {"model": "mdm-tiny-clip/clip-x"}}}}))
    df = load_scores([tmp_path])
    assert df.outcomes.map(len).eq(40).all() and df.metric.str.contains("tiny-clip").all()
    page = claims(df).set_index("claim")
    assert page.loc["ppots+mirror improves on Standard", "n_seeds"] == 3
    attr = page.loc["ppots+mirror improves on Standard (attribute accuracy, points)"]
    assert attr.n_seeds == 3 and attr.ci95.startswith("[")


@pytest.mark.parametrize("bench", ["table1", "table2"])
def test_the_committed_status_block_is_what_the_records_regenerate(bench):
    """results/<bench>/status.md (the README's generated block) equals what the committed records give now; and a
    README with the markers quotes exactly the concatenated blocks."""
    from mdm.report.layout import scale_note
    from mdm.report.status import quoted_block, readme_block, status_block
    from mdm.report.tables import paper_rows

    df = load_scores([ROOT / "results" / "runs" / bench])
    done = df[df.status == "done"].dropna(subset=["score"])
    page = claims(df, paper_rows(bench))
    note = scale_note(done, paper_rows(bench))
    assert status_block(bench, done, page, note) == (ROOT / "results" / bench / "status.md").read_text()
    readme = ROOT / "README.md"
    quoted = quoted_block(readme)
    if quoted is not None:
        assert quoted == readme_block(sorted((ROOT / "results").glob("*/status.md")))


def test_update_readme_replaces_only_between_the_markers(tmp_path):
    from mdm.report.status import BEGIN, END, quoted_block, update_readme

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nno markers\n")
    assert not update_readme(readme, "block\n") and readme.read_text() == "# x\n\nno markers\n"
    readme.write_text(f"# x\n\n## Status\n\n{BEGIN}\nold numbers\n{END}\n\n## After\n")
    assert update_readme(readme, "new numbers\n")
    assert readme.read_text() == f"# x\n\n## Status\n\n{BEGIN}\nnew numbers\n{END}\n\n## After\n"
    assert quoted_block(readme) == "new numbers\n"
