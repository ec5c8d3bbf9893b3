"""Text-to-image on the real architecture at tiny size: a random MMaDA (MMaDA's code, hub-shaped folder whose tokenizer
names MMaDA's special tokens) and a random MAGVIT-v2 (mdm.t2i.magvit) through the task plugin's layout, the objective,
MaskGIT decoding and `mdm bench benchmarks/table2.yaml --preset paper` to finished records and `mdm report`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mdm.errors import ConfigError
from tests.llada_fixture import (
    MMADA_CODE,
    llada_tokenizer,
    mmada_config,
    random_state_dict,
    requires_mmada_code,
)

pytestmark = [requires_mmada_code, pytest.mark.usefixtures("one_thread")]
ROOT = Path(__file__).resolve().parents[2]
SPECIAL = ["<|t2i|>", "<|soi|>", "<|eoi|>", "[iPAD]"]


def t2i_mmada_folder(dest: Path, codebook: int, num_vq_tokens: int, seed: int = 0) -> Path:
    """A tiny MMaDA whose tokenizer names <|t2i|>, <|soi|>, <|eoi|>, [iPAD] (MMaDA-8B's are reserved ids of LLaDA's
    126k vocabulary), with `codebook` image rows and `num_vq_tokens` codes per image."""
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    tok = llada_tokenizer()
    tok.add_tokens(SPECIAL, special_tokens=True)
    tok.save_pretrained(dest)
    cfg = mmada_config(tok, codebook=codebook)
    cfg["num_vq_tokens"] = num_vq_tokens
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(random_state_dict(dest, seed, code=MMADA_CODE), str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from mdm.t2i.image_tokenizer import MagvitV2Tokenizer
    from mdm.t2i.magvit import tiny_magvit

    root = tmp_path_factory.mktemp("hub")
    magvit = tiny_magvit(root / "magvitv2", seed=0, image_size=32, code_dir=MMADA_CODE)  # 64 codes, 8 x 8 per image
    vq = MagvitV2Tokenizer(magvit, code_dir=MMADA_CODE)
    return {"mmada": t2i_mmada_folder(root / "MMaDA-tiny", vq.codebook_size, vq.num_tokens), "magvit": magvit, "vq": vq}


@pytest.fixture(scope="module")
def loaded(hub):
    from mdm.adapters import load_model

    return load_model(hub["mmada"], causal=False, dtype=torch.float32, code_dir=MMADA_CODE)


def fmt_of(loaded, vq, max_text_len=40):
    from mdm.t2i.sequences import sequence_format

    model, tok = loaded
    return sequence_format(tok, model.config, vq, max_text_len)


def examples(vq, n=4):
    from mdm.t2i.scenes import make_examples

    ex = make_examples("train", n, seed=0)
    codes = vq.encode([e["image"] for e in ex]).tolist()
    return [{"prompt": e["caption"], "codes": c} for e, c in zip(ex, codes)]


def test_items_are_mmadas_layout_with_the_caption_as_prompt(hub, loaded):
    from mdm.adapters.mmada_prompting import T2IIds

    model, tok = loaded
    fmt = fmt_of(loaded, hub["vq"])
    ids = fmt.ids
    assert fmt.name == "mmada" and fmt.offset == model.config.llm_vocab_size and len(tok) <= fmt.offset
    assert (ids.t2i, ids.soi, ids.eoi, ids.pad) == tuple(tok.convert_tokens_to_ids(SPECIAL))
    assert ids != T2IIds.of(tok)  # not the 8B checkpoint's reserved ids: this tokenizer names its own
    for ex, it in zip(examples(hub["vq"]), fmt.items(examples(hub["vq"]))):
        seq, n_codes = it["input_ids"], len(ex["codes"])
        assert len(seq) == fmt.max_text_len + 1 + 1 + n_codes + 1 and seq[-1] == ids.eoi and seq[it["prompt_length"] - 1] == ids.soi
        assert seq[it["prompt_length"]:-1] == [fmt.offset + c for c in ex["codes"]]
        pads = it["attention_mask"].index(1)
        assert seq[:pads] == [ids.pad] * pads and seq[pads] == ids.t2i and seq[pads + 1] == tok.bos_token_id


def test_padded_and_unpadded_batches_give_the_same_loss(hub, loaded):
    """Rows of different caption lengths, together and one at a time: the same per-row loss (4-D bias attention)."""
    from mdm.data import Collator
    from mdm.objective import MDMObjective
    from tests.numerics import REASSOCIATION_RTOL

    model, tok = loaded
    fmt = fmt_of(loaded, hub["vq"])
    items = fmt.items(examples(hub["vq"], 3))
    assert len({it["attention_mask"].index(1) for it in items}) > 1  # different amounts of left padding
    collate = Collator(tok, "text-to-image", 128)
    objective = MDMObjective("standard", fmt.mask_id)
    batch = collate(items)
    batch.positions = torch.arange(3)
    together = objective(model, batch, seed=3, step=0, global_batch_size=3).row_losses
    alone = []
    for i, it in enumerate(items):
        one = collate([it])
        one.positions = torch.tensor([i])
        alone.append(objective(model, one, seed=3, step=0, global_batch_size=3).row_losses[0])
    torch.testing.assert_close(together, torch.stack(alone), rtol=REASSOCIATION_RTOL, atol=1e-6)
    eligible = batch.response_mask()
    assert torch.equal(eligible.sum(1), torch.full((3,), 64 + 1))  # the codes and <|eoi|>, never the caption


def test_batched_greedy_decoding_equals_one_at_a_time(hub, loaded):
    model, _ = loaded
    fmt = fmt_of(loaded, hub["vq"])
    captions = [e["prompt"] for e in examples(hub["vq"], 3)]
    both = fmt.generate(model, captions, steps=4, batch_size=3)
    ones = torch.cat([fmt.generate(model, [c], steps=4, batch_size=1) for c in captions])
    assert torch.equal(both, ones) and both.shape == (3, 64) and int(both.max()) < 64 and int(both.min()) >= 0
    guided = fmt.generate(model, captions, steps=4, batch_size=3, guidance_scale=1.5)
    assert guided.shape == both.shape
    images = hub["vq"].decode(both)
    assert images.shape == (3, 32, 32, 3) and images.dtype.name == "uint8"


def test_sampled_decoding_of_a_launchs_share_is_one_process_decoding(hub, loaded):
    """A batch's draws are keyed by its first caption's place in the whole list: the batches a rank of a launch
    decodes (`first`) give the codes one process gives them, at temperature 1 with guidance (the paper's decoding)."""
    model, _ = loaded
    fmt = fmt_of(loaded, hub["vq"])
    captions = [e["prompt"] for e in examples(hub["vq"], 5)]
    knobs = dict(steps=4, batch_size=2, temperature=1.0, guidance_scale=1.5, seed=7)
    whole = fmt.generate(model, captions, **knobs)
    shares = [fmt.generate(model, captions[k : k + 2], first=k, **knobs) for k in (0, 2, 4)]
    assert torch.equal(torch.cat(shares), whole)
    assert not torch.equal(fmt.generate(model, captions, **{**knobs, "seed": 8}), whole)


def test_a_codec_the_model_does_not_fit_is_refused(hub, loaded, tmp_path):
    from mdm.t2i.image_tokenizer import MagvitV2Tokenizer, tiny_image_tokenizer
    from mdm.t2i.magvit import tiny_magvit
    from mdm.t2i.sequences import sequence_format
    from tests.eval.test_eval_fixtures import tiny_tokenizer

    model, tok = loaded
    with pytest.raises(ConfigError, match="MAGVIT-v2's"):
        sequence_format(tok, model.config, tiny_image_tokenizer(), 12)  # the tiny k-means codebook
    other = MagvitV2Tokenizer(tiny_magvit(tmp_path / "m8", codebook_bits=8, code_dir=MMADA_CODE), code_dir=MMADA_CODE)
    with pytest.raises(ConfigError, match="256") as e:
        sequence_format(tok, model.config, other, 12)  # 256 codes for a 64-code model
    assert e.value.where == "data.options.image_tokenizer"
    smaller = MagvitV2Tokenizer(hub["magvit"], image_size=16, code_dir=MMADA_CODE)
    with pytest.raises(ConfigError, match="num_vq_tokens"):
        sequence_format(tok, model.config, smaller, 12)  # 16 codes per image for a model trained on 64
    with pytest.raises(ConfigError, match="no image tokens"):  # a text model: codes would become text tokens
        sequence_format(tiny_tokenizer(), type("C", (), {"model_type": "gemma3_text"})(), hub["vq"], 12)


def test_table2_paper_preset_runs_on_tiny_mmada_and_magvit_to_records_and_report(hub, tmp_path):
    """The paper preset's own spec, pointed at the tiny hub-shaped folders: every Table 2 method trains in MMaDA's
    layout through the Trainer, decodes with MaskGIT (guidance on), is CLIP-scored, and `mdm report` reads it."""
    sets = {
        "model.source": hub["mmada"], "model.code_dir": MMADA_CODE, "launch": "null", "hardware.name": "cpu",
        "tasks.text-to-image.n_train": 24, "tasks.text-to-image.max_length": 128,
        "tasks.text-to-image.options.image_tokenizer": f"magvitv2:{hub['magvit']}",
        "tasks.text-to-image.options.images": "scenes", "tasks.text-to-image.options.max_text_len": 40,
        "tasks.text-to-image.options.code_dir": MMADA_CODE,
        "training.epochs": 1, "training.global_batch_size": 8, "training.micro_batch_size": 4, "training.bf16": "false",
        "training.gradient_checkpointing": "false", "training.checkpoint_every": "null", "training.threads": 1,
        "ppots_pilot.a": 2, "ppots_pilot.b": 10, "ppots_pilot.c": 2,
        "eval.accuracy.clip_model": "tiny", "eval.accuracy.limit": 4, "eval.accuracy.steps": 3,
        "eval.accuracy.batch_size": 4,
    }
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "mdm.cli", "bench", str(ROOT / "benchmarks/table2.yaml"), "--preset", "paper",
           "--results", str(tmp_path / "runs"), "--only", "seed=42", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for method in ("ppots+mirror", "standard", "ppots", "mirror"):
        record = json.loads((tmp_path / f"runs/table2@paper/text-to-image/{method}/seed42/record.json").read_text())
        ev = record["eval"]["text-to-image"]
        assert record["status"] == "done" and ev["format"] == "mmada" and ev["n_eval"] == 4, method
        assert ev["image_tokenizer"]["name"] == "magvitv2" and ev["decoding"]["guidance_scale"] == 1.5
        assert 0 <= record["metrics"]["clip_score"] <= 100 and record["metrics"]["heldout_loss"] > 0
    report = subprocess.run([sys.executable, "-m", "mdm.cli", "report", str(tmp_path / "runs/table2@paper"), "--out",
                             str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "text-to-image" in (tmp_path / "report/leaderboard.md").read_text()
