"""The LLaDA SFT loss of a row does not depend on the micro-batch it lands in (issue 28, item 5).

The hub's LLaDA code ignores attention masks, so a row padded to its micro-batch's longest row sees that EOS
padding and is scored on it: its loss changes with its neighbours and the micro-batch size. With `data.pad_to` (a
fixed per-task canvas) every row is the same sequence in any layout; tested on the tiny LLaDA of the real hub code."""

from __future__ import annotations

import pytest
import torch

from mdm.adapters import checked, load_model
from mdm.data import Collator, make_task, mask_token_id_of
from mdm.objective import MDMObjective, Method
from mdm.objective.objective import model_token_ce
from mdm.train.config import DataConfig
from mdm.train.data import build_data
from tests.llada_fixture import llada_folder, requires_remote_code
from tests.numerics import approx

pytestmark = [requires_remote_code, pytest.mark.usefixtures("one_thread")]
N = 8  # rows of one global batch
LAYOUTS = {  # micro-batches as lists of the rows' global-batch positions
    "1 x 8": [list(range(8))],
    "2 x 4": [[0, 1, 2, 3], [4, 5, 6, 7]],
    "4 x 2": [[0, 1], [2, 3], [4, 5], [6, 7]],
    "8 x 1": [[i] for i in range(8)],
    "regrouped": [[0, 7, 3], [5, 1], [2, 6, 4]],
}


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    model, tok = load_model(llada_folder(tmp_path_factory.mktemp("llada") / "hub", "llada_hub"), causal=False,
                            dtype=torch.float32)
    assert not checked(model).can_pad  # the hub code: no attention mask, EOS padding that carries loss
    return model.eval(), tok


def row_losses(model, tok, items, layout) -> dict[int, float]:
    objective = MDMObjective(Method.build("standard"), mask_token_id_of(tok, model.config))
    collate = Collator(tok, "arith", 512, pad_carries_loss=True)
    out = {}
    with torch.no_grad():
        for rows in layout:
            batch = collate([items[i] for i in rows])
            batch.positions = torch.tensor(rows)
            draws = objective.draw(batch, seed=3, step=0, global_batch_size=N)
            res = objective.loss(model_token_ce(model), batch, draws)
            out.update(zip(rows, res.row_losses.double().tolist()))
    return out


def items_of(tok, **data):
    cfg = DataConfig(task="arith", max_length=160, eos_pad=16, heldout_fraction=0.0, **data)
    return build_data(cfg, tok, examples=make_task("arith", "train", n=N, seed=1)).train


def test_a_rows_loss_is_the_same_in_every_micro_batch_layout(llada):
    model, tok = llada
    items = items_of(tok, pad_to=128)
    assert {len(it["input_ids"]) for it in items} == {128}
    reference = row_losses(model, tok, items, LAYOUTS["8 x 1"])  # every row alone
    for name, layout in LAYOUTS.items():
        losses = row_losses(model, tok, items, layout)
        assert [losses[i] for i in range(N)] == approx([reference[i] for i in range(N)]), name


def test_without_a_canvas_the_loss_depends_on_the_neighbours(llada):
    model, tok = llada  # the defect pad_to removes: eos_pad alone leaves prompts of different lengths
    items = items_of(tok)
    assert len({len(it["input_ids"]) for it in items}) > 1
    alone = row_losses(model, tok, items, LAYOUTS["8 x 1"])
    together = row_losses(model, tok, items, LAYOUTS["1 x 8"])
    shortest = min(range(N), key=lambda i: len(items[i]["input_ids"]))
    assert together[shortest] != approx(alone[shortest])  # beyond float noise: other tokens seen and scored
