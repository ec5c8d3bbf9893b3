"""`training.checkpoint_minutes`: the wall-clock checkpoint policy of the paper presets (a checkpoint whenever that
much training time passed since the last one), alone (checkpoint_every null) or beside the step policy; it never
changes the trajectory, so a folder trained under another interval still resumes."""

from __future__ import annotations

from mdm.train.config import RunConfig
from mdm.train.trainer import Trainer
from tests.train.test_train import tiny_run


def _saves(tmp_path, monkeypatch, name, **over) -> list[int]:
    steps = []
    original = Trainer.save_checkpoint

    def counting(self):
        steps.append(self.state["step"])
        original(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", counting)
    cfg = tiny_run(tmp_path / name, tmp_path / "cache", **{"training__checkpoint_every": None, **over})
    assert Trainer(RunConfig.model_validate(cfg)).train()["status"] == "done"
    return steps


def test_checkpoints_by_wall_clock(tmp_path, monkeypatch):
    assert _saves(tmp_path, monkeypatch, "often", training__checkpoint_minutes=1e-6) == [1, 2, 3]  # not the last
    assert _saves(tmp_path, monkeypatch, "hourly", training__checkpoint_minutes=60) == []  # a short run: none
    assert _saves(tmp_path, monkeypatch, "steps", training__checkpoint_every=2, training__checkpoint_minutes=60) == [2]
    a = RunConfig.model_validate(tiny_run(tmp_path / "a", tmp_path, training__checkpoint_minutes=30))
    b = RunConfig.model_validate(tiny_run(tmp_path / "a", tmp_path))
    assert a.trajectory_dict() == b.trajectory_dict()  # when to save is not what is trained
