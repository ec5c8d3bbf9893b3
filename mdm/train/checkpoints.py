"""A run's checkpoints (the Trainer's part that writes them): `checkpoints/step_N` (accelerate's state, the model's
config and tokenizer beside it so that `mdm eval` can score an unfinished run, trainer_state.json) and model-only
snapshots `models/step_N`. Each is written to `.tmp-<name>` and renamed when complete; a full disk removes the
temporary folder and is one line (`mdm.train.run_dir.saving`), the last good checkpoint untouched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mdm.io import atomic_write_json, atomic_write_text
from mdm.train.run_dir import need_for, saving, state_bytes

LOG = "train_log.jsonl"


class Checkpoints:
    """Mixed into `mdm.train.trainer.Trainer` (uses its acc, run_dir, cfg, state, model, tokenizer, peft, total)."""

    def latest_checkpoint(self) -> Path | None:
        root = self.run_dir / "checkpoints"
        done = sorted(p for p in root.glob("step_*") if (p / "trainer_state.json").is_file()) if root.is_dir() else []
        return done[-1] if done else None

    def _checkpoint_due(self) -> bool:
        """Every `checkpoint_every` steps, or `checkpoint_minutes` of training after the last checkpoint (the main
        process's clock, broadcast: every process must save together)."""
        if self.checkpoint_every and self.state["step"] % self.checkpoint_every == 0:
            return True
        minutes = self.cfg.training.checkpoint_minutes
        if not minutes:
            return False
        due = [self._elapsed() - self.state.get("checkpoint_elapsed_s", 0.0) >= 60 * minutes]
        if self.acc.num_processes > 1:
            # deferred: accelerate (slow import), only for launched runs
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(due, from_process=0)
        return bool(due[0])

    def save_checkpoint(self) -> None:
        if self.cfg.training.checkpoint_minutes:
            self.state["checkpoint_elapsed_s"] = self._elapsed()
        acc, root = self.acc, self.run_dir / "checkpoints"
        name = f"step_{self.state['step']:08d}"
        tmp = root / f".tmp-{name}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        latest = self.latest_checkpoint()
        with saving(tmp, need_for(latest, self.model), f"checkpoint {name}", latest):
            acc.save_state(str(tmp), safe_serialization=False)
            acc.wait_for_everyone()
            if acc.is_main_process:
                if self.peft is None:  # config + tokenizer: the checkpoint is a model folder (mdm eval of a cut run)
                    acc.unwrap_model(self.model).config.save_pretrained(tmp)
                    self.tokenizer.save_pretrained(tmp)
                state = {**self.state, "elapsed_s": self._elapsed(), "total_steps": self.total}
                atomic_write_json(tmp / "trainer_state.json", state)
        if acc.is_main_process:
            os.replace(tmp, root / name)  # a kill before this line leaves only a .tmp folder, ignored
            old = sorted(p for p in root.glob("step_*"))[: -self.cfg.training.keep_checkpoints]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        acc.wait_for_everyone()

    def save_model_snapshot(self) -> None:
        """Weights and tokenizer only (a LoRA run: its adapter) under models/step_N: written to a temporary folder,
        then renamed; the oldest beyond `keep_models` are removed. A resumed run rewrites a step it saved before."""
        acc, root = self.acc, self.run_dir / "models"
        name = f"step_{self.state['step']:08d}"
        state_dict = acc.get_state_dict(self.model) if self.peft is None else None  # a collective under FSDP
        if acc.is_main_process:
            tmp = root / f".tmp-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            with saving(tmp, state_bytes(self.model, 0), f"model snapshot {name}", self.latest_checkpoint()):
                if self.peft is not None:
                    self.peft.save_pretrained(tmp)
                else:
                    acc.unwrap_model(self.model).save_pretrained(tmp, state_dict=state_dict)
                self.tokenizer.save_pretrained(tmp)
            shutil.rmtree(root / name, ignore_errors=True)
            os.replace(tmp, root / name)
            keep = self.cfg.training.keep_models
            for old in sorted(root.glob("step_*"))[: -keep] if keep else []:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _truncate_log(self, step: int) -> None:
        """Keep the log's first `step` lines (a kill may have cut the last line short)."""
        path = self.run_dir / LOG
        if path.is_file():
            keep = path.read_text().splitlines(keepends=True)[:step]
            atomic_write_text(path, "".join(keep))
