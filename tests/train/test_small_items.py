"""Issue 33, item 5: `mdm eval` of an interrupted run (its last checkpoint, said so in the record), the test source's
columns checked before training, a prompt template joining columns (an Alpaca `instruction` is never dropped
silently), CSV, `--no-write` naming no record, progress every N seconds, absurd step counts refused, distinct labels
for the two tiny bases, and a dry-run without a `hardware` section."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mdm.cli import main
from mdm.data import make_task
from mdm.errors import ConfigError
from tests.train.test_nothing_lost import config, one_line, rows, write_jsonl
from tests.train.test_train_cli import mdm_here

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_eval_of_an_interrupted_run_uses_its_last_checkpoint_and_says_so(tmp_path, cache, monkeypatch):
    from mdm.train.trainer import Trainer

    data = write_jsonl(tmp_path / "d.jsonl", rows())
    run = tmp_path / "run"
    cfg = yaml.safe_load(config(tmp_path, cache, data, run, max_steps=40, checkpoint_every=2).read_text())
    cfg["data"]["options"] |= {"test_path": str(data), "scorer": "exact"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    real = Trainer.train_step

    def cut(self, step):
        if step == 5:
            raise KeyboardInterrupt  # Ctrl-C after the checkpoint of step 4
        return real(self, step)

    monkeypatch.setattr(Trainer, "train_step", cut)
    out = mdm_here("train", tmp_path / "c.yaml")
    assert (out.returncode, out.stderr.strip().splitlines()[-1]) == (130, "mdm train: interrupted"), out.stderr
    monkeypatch.undo()
    assert not (run / "model").exists() and (run / "checkpoints/step_00000004").is_dir()
    args = ["eval", run, "--n", "4", "--gen-length", "4", "--steps", "4", "--block-length", "4", "--t-grid", "2"]
    out = mdm_here(*args, "--no-write")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "  note: unfinished run: evaluated from its last checkpoint step_00000004 (step 4 of 40)" in lines
    assert lines[-1] == "record: not written (--no-write)" and not (run / "record.json").exists()
    out = mdm_here(*args)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == f"record: {run}/record.json", out.stderr
    saved = json.loads((run / "record.json").read_text())
    assert saved["eval"]["dataset"]["from_checkpoint"]["step"] == 4 and saved["metrics"]["from_checkpoint_step"] == 4
    assert saved["eval"]["dataset"]["model_dir"] == str(run / "checkpoints/step_00000004")


def test_a_test_file_with_other_columns_is_refused_before_training(tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    other = write_jsonl(tmp_path / "t.jsonl", [{"question": r["prompt"], "answer": r["response"]} for r in rows(5)])
    cfg = yaml.safe_load(config(tmp_path, cache, data, tmp_path / "run").read_text())
    cfg["data"]["options"] |= {"test_path": str(other), "scorer": "exact"}
    cfg["eval"]["accuracy"] = {"gen_length": 4, "steps": 4, "block_length": 4}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    line = one_line(mdm_here("train", tmp_path / "c.yaml"))
    assert line == (f"mdm train: error: data.options.format: {other}: neither a 'messages' column nor 'prompt' + "
                    "'response' columns; it has: question, answer (set messages_key, or prompt_key and response_key) "
                    "(the test source, scored after training)")
    assert not (tmp_path / "run").exists()


def test_a_prompt_template_joins_columns_and_an_instruction_is_never_dropped_silently(tmp_path):
    alpaca = [{"instruction": "Add.", "input": "2 + 3", "output": "5"}, {"instruction": "Say hi.", "input": "",
                                                                          "output": "hi"}]
    path = write_jsonl(tmp_path / "alpaca.jsonl", alpaca)
    got = make_task("dataset", "train", path=str(path), prompt_template="{instruction}\n{input}", response_key="output")
    assert [(e["prompt"], e["response"]) for e in got] == [("Add.\n2 + 3", "5"), ("Say hi.", "hi")]
    with pytest.raises(ConfigError, match=r"data.options.prompt_key: .*alpaca.jsonl: the prompt \('input'\) would "
                       r"leave out the 'instruction' column .* prompt_template: \"\{instruction\}\\n\{input\}\""):
        make_task("dataset", "train", path=str(path), prompt_key="input", response_key="output")
    alone = make_task("dataset", "train", path=str(path), prompt_template="{input}", response_key="output")
    assert [e["prompt"] for e in alone] == ["2 + 3", ""]  # said explicitly: allowed
    with pytest.raises(ConfigError, match="data.options.prompt_template: .*no column 'instr'"):
        make_task("dataset", "train", path=str(path), prompt_template="{instr}", response_key="output")
    with pytest.raises(ConfigError, match="data.options.prompt_template: '{a.b}': needs plain column names"):
        make_task("dataset", "train", path=str(path), prompt_template="{a.b}", response_key="output")


def test_chat_rows_with_a_null_turn_or_an_empty_answer_are_dropped_and_counted(tmp_path):
    def chat(user, assistant):
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}

    path = write_jsonl(tmp_path / "chat.jsonl", [chat("1 + 1 =", "2"), chat(None, "3"), chat("2 + 2 =", None),
                                                 chat("3 + 3 =", "6"), chat("4 + 4 =", "8")])
    got = make_task("dataset", "train", path=str(path))
    assert [e["response"] for e in got] == ["2", "6", "8"]  # never the text "None"
    assert got.notes == [f"{path}: dropped 2 of 5 rows: null prompt (1), empty response (1) (the rule: a row with a "
                         "null or empty response, or a null prompt, is dropped)"]


def test_csv_is_read_through_datasets_with_empty_cells_dropped(tmp_path):
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["prompt", "response"])
        w.writeheader()
        w.writerows(rows(5) + [{"prompt": "1 + 1 =", "response": ""}, {"prompt": "NA", "response": "None"}])
    got = make_task("dataset", "train", path=str(tmp_path / "d.csv"))
    assert [(e["prompt"], e["response"]) for e in got] == [(r["prompt"], r["response"]) for r in rows(5)] + \
        [("NA", "None")]  # text stays text: no 72.0, no NA -> null
    assert got.notes == [f"{tmp_path}/d.csv: dropped 1 of 7 rows: empty response (1) (the rule: a row with a null or "
                         "empty response, or a null prompt, is dropped)"]


def test_absurd_step_counts_are_refused_before_compute(tmp_path, cache):
    cfg = config(tmp_path, cache, write_jsonl(tmp_path / "d.jsonl", rows()), tmp_path / "run", max_steps=None,
                 epochs=1e9)
    assert one_line(mdm_here("train", cfg)) == (
        "mdm train: error: training.epochs: 8,000,000,000 optimizer steps (1e+09 epochs of 60 examples at "
        "global_batch_size 8) is over 10,000,000; lower epochs or set max_steps")


def test_plain_progress_prints_every_n_seconds_whatever_the_step_count(monkeypatch):
    import io

    from mdm import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    bar = progress.PlainProgress(10**9, "run", file=out, seconds=30)
    for _ in range(5):
        now[0] += 10.0
        bar.update(1)
    lines = out.getvalue().splitlines()  # 30 s after the start (step 3), not at step 10**8
    assert len(lines) == 1 and lines[0].startswith("run: step 3/1000000000 (0%), elapsed 0:00:30, eta "), lines


def test_the_two_tiny_bases_have_distinct_progress_labels():
    from mdm.train.config import RunConfig
    from mdm.train.model import base_run_config

    cfg = RunConfig.model_validate({"data": {"task": "arith"}, "output_dir": "x",
                                    "model": {"base": "auto", "pretrain": {"init_from_arm": True}}})
    arm = cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": "arm"})})
    assert (base_run_config(arm, "-").name, base_run_config(cfg, "-").name) == ("base arith-arm", "base arith-mdm")


def test_a_dry_run_without_hardware_says_the_time_is_unknown(tmp_path, capsys):
    text = (ROOT / "benchmarks" / "regression.yaml").read_text()
    spec = tmp_path / "nohw.yaml"
    spec.write_text("\n".join(line for line in text.splitlines() if "hardware: {name: cpu" not in line))
    assert main(["bench", str(spec), "--dry-run", "--results", str(tmp_path / "res")]) == 0
    last = [line for line in capsys.readouterr().out.splitlines() if line.startswith("to run:")]
    assert len(last) == 1 and last[0].endswith(
        "time unknown: the preset has no hardware section (give hardware: {name, tokens_per_s} measured, or {name, "
        "count, mfu}) to estimate it") and "0s" not in last[0], last
