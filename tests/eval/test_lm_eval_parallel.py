"""The lm-eval plugin data-parallel (issue 28, item 3): under `accelerate launch` lm-eval's evaluator gives each rank
every world-th document (as for its own HF model); the plugin reports rank / world size and keys each request's
random draws by its document, so a rank's answers are the ones a single process gives for the same documents."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance

import mdm.eval.distributed
from evals import lm_eval_plugin as plugin
from mdm.data import make_task
from mdm.eval.distributed import Ranks
from tests.eval.test_eval_fixtures import sharp_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm_parts():
    tok = tiny_tokenizer()
    return sharp_model(tok), tok


def _requests(n: int) -> list[Instance]:
    contexts = [f"Question: {e['prompt']}\nAnswer:" for e in make_task("arith", "test", n=n)]
    return [Instance("generate_until", {}, (c, {"until": []}), 0, ("arith_t", doc_id, 1))
            for doc_id, c in enumerate(contexts)]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_each_rank_answers_its_documents_as_one_process_does(lm_parts, monkeypatch, temperature):
    model, tok = lm_parts
    knobs = dict(gen_length=8, steps=8, block_length=8, batch_size=2, temperature=temperature, seed=3)
    reqs = _requests(6)
    whole = plugin.MDMLM(model=model, tokenizer=tok, **knobs).generate_until(reqs)
    for rank in range(2):  # lm-eval's build_all_requests(rank, world_size): documents rank, rank + 2, ...
        monkeypatch.setattr(mdm.eval.distributed, "ranks", lambda rank=rank: Ranks(rank, 2, None))
        lm = plugin.MDMLM(model=model, tokenizer=tok, **knobs)
        assert (lm.rank, lm.world_size) == (rank, 2)
        assert lm.generate_until(reqs[rank::2]) == whole[rank::2]


def test_repeats_of_a_request_draw_differently(lm_parts):
    model, tok = lm_parts
    lm = plugin.MDMLM(model=model, tokenizer=tok, gen_length=8, steps=8, block_length=8, temperature=5.0)
    req = _requests(1)[0]
    a, b = lm.generate_until([req, req])  # lm-eval's `repeats`: the same object twice
    assert plugin._row_keys([req, req]) == [("arith_t", 0, 0, 0), ("arith_t", 0, 0, 1)]
    assert a != b
