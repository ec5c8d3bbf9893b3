"""Text-to-image (Table 2) pipeline: scenes and the attribute checker, image tokenizers, sequences through every
method preset, MaskGIT decoding, CLIP score vs torchmetrics, the tiny CLIP's held-out retrieval, runs through the one Trainer (resumable), the bench and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdm.errors import ConfigError
from mdm.t2i.scenes import (
    ALL_SCENES,
    COLOURS,
    PLACEMENTS,
    SHAPES,
    Scene,
    _shape_mask,
    attribute_accuracy,
    captions_of,
    check_attributes,
    make_examples,
    quadrant_origin,
    read_image,
)

TINY_SIZE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
             "head_dim": 16, "intermediate_size": 64}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec():
    from mdm.t2i.data import T2ICodec

    return T2ICodec.tiny()


def render_at(scene: Scene, placement) -> np.ndarray:
    size, dx, dy = placement
    img = np.zeros((24, 24, 3), dtype=np.uint8)
    for q in scene.quadrants():
        ox, oy = quadrant_origin(q)
        img[_shape_mask(scene.shape, ox + dx, oy + dy, size)] = COLOURS[scene.colour]
    return img


# ---------------------------------------------------------------- scenes and the attribute checker


def test_ground_truth_images_have_100_percent_attribute_accuracy():
    images, scenes = [], []
    for scene in ALL_SCENES:  # every scene at every placement: 96 x 13 images
        for placement in PLACEMENTS:
            images.append(render_at(scene, placement))
            scenes.append(scene)
    acc = attribute_accuracy(images, scenes)
    assert acc == {"colour": 100.0, "shape": 100.0, "count": 100.0, "position": 100.0, "all": 100.0}
    drawn = make_examples("test", 200, seed=3)
    assert attribute_accuracy([e["image"] for e in drawn], [e["scene"] for e in drawn])["all"] == 100.0


def test_attribute_checker_rejects_each_wrong_attribute():
    truth = Scene("red", "circle", 1, "top left")
    wrong = {"colour": Scene("blue", "circle", 1, "top left"), "shape": Scene("red", "square", 1, "top left"),
             "position": Scene("red", "circle", 1, "bottom right")}
    img = render_at(truth, PLACEMENTS[4])
    for attr, scene in wrong.items():
        checks = check_attributes(img, scene)
        assert not checks[attr] and not checks["all"], attr
        assert all(checks[a] for a in ("colour", "shape", "count", "position") if a != attr), attr
    pair = check_attributes(img, Scene("red", "circle", 2, "left"))
    assert not pair["count"] and not pair["position"] and pair["colour"] and pair["shape"]
    assert check_attributes(np.zeros((24, 24, 3), np.uint8), truth) == \
        {"colour": False, "shape": False, "count": False, "position": False, "all": False}
    assert read_image(img).shapes == ["circle"]
    bar = np.zeros((24, 24, 3), np.uint8)
    bar[2:5, 1:10] = COLOURS["red"]  # a 3 x 9 bar is no square (aspect), however well it fills its box
    assert read_image(bar).shapes == ["blob"]
    assert check_attributes(bar, Scene("red", "square", 1, "top left")) == \
        {"colour": True, "shape": False, "count": True, "position": True, "all": False}


def test_caption_split_is_disjoint_and_covers_every_word():
    train, test = captions_of("train"), captions_of("test")
    assert not {c for c, _ in train} & {c for c, _ in test}
    assert len(test) >= 60 and len({s for _, s in test}) >= 50
    words = {w for c, _ in test for w in c.replace(":", " ").split()}
    assert words <= {w for c, _ in train for w in c.replace(":", " ").split()}
    assert all(s in {sc.shape for _, sc in train} for s in SHAPES)


# ---------------------------------------------------------------- image tokenizers


def test_tiny_tokenizer_round_trip(codec):
    tok = codec.image_tokenizer
    assert tok.num_tokens == 36 and tok.image_size == 24
    codes = torch.randint(0, tok.codebook_size, (16, tok.num_tokens), generator=torch.Generator().manual_seed(0))
    assert torch.equal(tok.encode(tok.decode(codes)), codes)  # exact on the codebook's own reconstructions
    images = np.stack([e["image"] for e in make_examples("test", 64, seed=5)])
    rec = tok.decode(tok.encode(images))
    assert rec.shape == images.shape and rec.dtype == np.uint8
    assert np.abs(rec.astype(int) - images).mean() < 1.0  # the tiny codebook is lossless on this task


def test_kmeans_tokenizer_lossy_codebook_round_trip_and_save(tmp_path):
    from mdm.t2i.image_tokenizer import KMeansPatchTokenizer, load_image_tokenizer

    images = [e["image"] for e in make_examples("train", 200, seed=2)]
    tok = KMeansPatchTokenizer.fit(images, codebook_size=32, patch=4, seed=0)
    assert tok.codebook_size == 32
    codes = torch.randint(0, 32, (8, 36), generator=torch.Generator().manual_seed(1))
    assert torch.equal(tok.encode(tok.decode(codes)), codes)
    test = np.stack([e["image"] for e in make_examples("test", 32, seed=2)])
    rec = tok.decode(tok.encode(test))
    assert np.abs(rec.astype(float) - test).mean() < 12.0  # close (a 32-entry codebook is lossy)
    tok.save(tmp_path / "cb")
    again = load_image_tokenizer(f"kmeans:{tmp_path / 'cb'}")
    assert torch.equal(again.encode(test), tok.encode(test))
    with pytest.raises(ValueError, match="codes must lie"):
        tok.decode(torch.full((1, 36), 32))


def test_magvit_adapter_explains_what_it_needs():
    from mdm.t2i.image_tokenizer import load_image_tokenizer

    with pytest.raises(ConfigError, match="MMaDA"):
        load_image_tokenizer("magvitv2")
    with pytest.raises(ConfigError, match="unknown image tokenizer"):
        load_image_tokenizer("jpeg")


# ---------------------------------------------------------------- sequences and the objective


def test_sequences_match_the_chat_format_and_train_with_every_preset(codec):
    from mdm.data import Collator
    from mdm.data.collate import format_chat
    from mdm.models import TinySize, build_tiny_model
    from mdm.objective import MDMObjective, Method
    examples = make_examples("train", 8, seed=0)
    items = codec.items(examples)
    for ex, it in zip(examples, items):
        chat = codec.chat_example(ex["caption"], ex["image"])
        assert format_chat(codec.tokenizer, chat["prompt"], chat["response"]) == (it["input_ids"], it["prompt_length"])
        image_part = it["input_ids"][it["prompt_length"] : -1]
        assert len(image_part) == 36 and all(codec.code_offset <= i < codec.vocab_size for i in image_part)
    assert codec.vocab_size == codec.code_offset + codec.codebook_size
    batch = Collator(codec.tokenizer, "text-to-image", 64)(items)
    assert torch.equal(batch.response_mask().sum(1), torch.full((8,), 37))  # 36 codes + EOS
    model = build_tiny_model(codec.tokenizer, size=TinySize(**TINY_SIZE))
    assert model.config.vocab_size == codec.vocab_size
    for preset in ("standard", "ppots", "mirror", "ppots+mirror"):
        spec = {"preset": preset, "t_sampler": {"density": "flat"}} if "ppots" in preset else preset
        objective = MDMObjective(Method.build(spec), codec.mask_id)
        draws = objective.draw(batch, seed=1, step=0, global_batch_size=8)
        prompt = ~batch.response_mask() & batch.attention_mask.bool()
        assert not (draws.masked & prompt[None]).any(), preset  # captions are never masked
        out = objective(model, batch, seed=1, step=0, global_batch_size=8)
        assert torch.isfinite(out.loss) and out.masked_tokens > 0, preset
        out.loss.backward()


@pytest.mark.numerics
def test_maskgit_decoding_is_deterministic_batch_independent_and_code_only(codec):
    from mdm.models import TinySize, build_tiny_model
    from mdm.t2i.generate import ImageDecodeConfig, commit_schedule, generate_codes

    assert sum(commit_schedule(36, 12)) == 36 and min(commit_schedule(36, 12)) >= 1
    assert commit_schedule(36, 100) == [1] * 36
    model = build_tiny_model(codec.tokenizer, seed=3, size=TinySize(**TINY_SIZE))
    captions = [c for c, _ in captions_of("test")[:5]]
    cfg = ImageDecodeConfig(steps=6, batch_size=5)
    codes = generate_codes(model, codec, captions, cfg)
    assert codes.shape == (5, 36) and int(codes.min()) >= 0 and int(codes.max()) < codec.codebook_size
    assert torch.equal(codes, generate_codes(model, codec, captions, cfg))
    one_by_one = torch.cat([generate_codes(model, codec, [c], cfg) for c in captions])
    assert torch.equal(codes, one_by_one)
    sampled = generate_codes(model, codec, captions, ImageDecodeConfig(steps=6, temperature=1.0, seed=4))
    assert torch.equal(sampled, generate_codes(model, codec, captions, ImageDecodeConfig(steps=6, temperature=1.0,
                                                                                          seed=4)))
    with pytest.raises(ConfigError, match="schedule"):
        ImageDecodeConfig(schedule="square")


# ---------------------------------------------------------------- CLIP score


class _FixedEmbeddings(torch.nn.Module):
    """A stand-in for transformers' CLIPModel that returns given embeddings; inputs are row indices."""

    def __init__(self, image_emb: torch.Tensor, text_emb: torch.Tensor):
        super().__init__()
        self.register_buffer("image_emb", image_emb.detach().float().cpu())
        self.register_buffer("text_emb", text_emb.detach().float().cpu())
        self.config = type("Config", (), {})()

    def get_image_features(self, pixel_values):
        return self.image_emb[pixel_values.reshape(-1).long()]

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text_emb[input_ids[:, 0].long()]


class _IndexProcessor:
    """A stand-in for CLIPProcessor: images are 1x1x1 tensors holding their row index; texts are numbered
    in the order torchmetrics passes them."""

    def __call__(self, images=None, text=None, **_):
        if images is not None:
            return {"pixel_values": torch.stack([im.reshape(-1)[0] for im in images]).long()}
        n = len(text)
        return {"input_ids": torch.arange(n)[:, None], "attention_mask": torch.ones(n, 1, dtype=torch.long)}


def torchmetrics_clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """torchmetrics.multimodal.CLIPScore on row-aligned embeddings (its definition: max(mean(100 cos), 0)), through
    a model/processor adapter that hands it those embeddings: torchmetrics' code path, not a re-implementation."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    n = image_emb.shape[0]
    metric = CLIPScore(model_name_or_path=lambda: (_FixedEmbeddings(image_emb, text_emb), _IndexProcessor()))
    metric.update([torch.full((1, 1, 1), i) for i in range(n)], [f"text {i}" for i in range(n)])
    return float(metric.compute())


@pytest.mark.numerics
def test_clip_score_equals_torchmetrics_on_fixed_embeddings():
    from mdm.t2i.clip import clip_score_from_embeddings

    g = torch.Generator().manual_seed(0)
    img = torch.randn(12, 16, generator=g)
    txt = img + 0.8 * torch.randn(12, 16, generator=g)  # every cosine positive
    cos = torch.nn.functional.cosine_similarity(img.double(), txt.double())
    assert bool((cos > 0).all())
    ours, per = clip_score_from_embeddings(img, txt)
    assert ours == pytest.approx(float(100 * cos.mean()), abs=1e-9)
    assert torchmetrics_clip_score(img, txt) == pytest.approx(ours, abs=1e-3)
    # with negative cosines the definitions differ: ours clamps each pair, torchmetrics clamps the mean
    txt2 = txt.clone()
    txt2[:4] = -img[:4]
    cos2 = torch.nn.functional.cosine_similarity(img.double(), txt2.double())
    ours2, per2 = clip_score_from_embeddings(img, txt2)
    assert ours2 == pytest.approx(float((100 * cos2.clamp(min=0)).mean()), abs=1e-9)
    assert torchmetrics_clip_score(img, txt2) == pytest.approx(max(float(100 * cos2.mean()), 0.0), abs=1e-3)
    assert ours2 > torchmetrics_clip_score(img, txt2)
    with pytest.raises(ValueError, match="row-aligned"):
        clip_score_from_embeddings(img, txt[:3])


@pytest.mark.slow
def test_tiny_clip_ranks_matching_captions_above_mismatched(record_property):
    from mdm.t2i.clip import retrieval_eval, tiny_clip

    scorer = tiny_clip()  # trained once (about 2 CPU minutes) and cached
    r = retrieval_eval(scorer, n=200)
    record_property("tiny_clip_retrieval", json.dumps(r))
    print("tiny CLIP held-out retrieval:", json.dumps(r))
    assert r["pairwise"] > 0.95
    assert r["top1"] > 0.8
    assert min(r[f"hard_{a}"] for a in ("colour", "shape", "count", "position")) > 0.7
    assert r["clip_score_matched"] > r["clip_score_mismatched"] + 30
    examples = make_examples("test", 20, seed=9)
    res = scorer.score([e["image"] for e in examples], [e["caption"] for e in examples])
    assert res["negative_cosines"] == 0
    wrong = [captions_of("test")[(i * 7 + 3) % 80][0] for i in range(20)]
    assert scorer.score([e["image"] for e in examples], wrong)["clip_score"] < res["clip_score"]
    # the generic "<open_clip model>/<pretrained>" path (ViT-B-32/openai in the paper preset) loads the same model
    from mdm.t2i.clip import TINY_CLIP_NAME, ClipScorer

    again = ClipScorer.from_spec(f"{TINY_CLIP_NAME}/{scorer.folder / 'open_clip_model.pt'}")
    assert again.score([e["image"] for e in examples], [e["caption"] for e in examples])["clip_score"] == \
        pytest.approx(res["clip_score"], abs=1e-6)
    with pytest.raises(ConfigError, match="ViT-B-32/openai"):
        ClipScorer.from_spec("ViT-B-32")


# ---------------------------------------------------------------- runs end to end


def _untrained_tiny_clip():
    import open_clip

    from mdm.t2i.cache import cache_root
    from mdm.t2i.clip import TINY_CLIP_NAME, ClipScorer, _quiet_open_clip, _register_tiny_config

    folder = cache_root() / "clip-config"
    folder.mkdir(parents=True, exist_ok=True)
    _register_tiny_config(folder)
    torch.manual_seed(0)
    with _quiet_open_clip():
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=None)
    return ClipScorer(model, preprocess, open_clip.get_tokenizer(TINY_CLIP_NAME), "untrained")


def t2i_run(output_dir, method="ppots+mirror", **training) -> dict:
    """A tiny text-to-image run config (the trainer's RunConfig sections), a few steps."""
    return {
        "model": {"size": TINY_SIZE, "base": "auto",
                  "pretrain": {"n_examples": 64, "max_steps": 8, "global_batch_size": 16, "micro_batch_size": 16,
                               "full_sequence": False}},
        "data": {"task": "text-to-image", "n_train": 48, "max_length": 64},
        "method": method,
        "training": {"max_steps": 4, "global_batch_size": 8, "micro_batch_size": 4, "threads": 1, **training},
        "ppots_pilot": {"a": 2, "b": 10, "c": 2},
        "eval": {"t_grid": 2, "accuracy": {"clip_model": "tiny", "limit": 6, "steps": 4, "grid": 6}},
        "output_dir": str(output_dir),
    }


def test_a_t2i_run_trains_through_the_trainer_and_its_evaluate_hook_scores_it(tmp_path):
    """The one pipeline: Trainer (micro-batches: 2 of 4 rows, held-out split, P-POTS pilot) -> model/ ->
    mdm.eval.api.evaluate_run -> the task's evaluate hook -> record; a rerun of the evaluation gives the same."""
    from mdm.eval.api import evaluate_run
    from mdm.t2i.task import evaluate
    from mdm.train import RunConfig, Trainer, read_log

    cfg = RunConfig.model_validate(t2i_run(tmp_path / "run"))
    result = Trainer(cfg).train()
    assert result["status"] == "done" and result["steps"] == 4 and result["accumulation_steps"] == 2
    assert result["n_heldout"] == 5 and result["n_train"] == 43 and result["metrics"]["heldout_loss"] > 0
    assert all(e["masked_tokens"] > 0 for e in read_log(tmp_path / "run"))
    scorer = _untrained_tiny_clip()
    out = evaluate(tmp_path / "run", cfg.eval.accuracy, scorer=scorer)
    m = out["metrics"]
    ev = out["tasks"]["text-to-image"]
    assert ev["n_eval"] == 6 and ev["decoding"]["sampler"] == "maskgit" and ev["decoding"]["steps"] == 4
    assert 0 <= m["clip_score"] <= 100 and 0 <= m["attribute_accuracy"] <= 100 and m["score"] == m["clip_score"]
    assert ev["clip"]["negative_cosines"] >= 0 and "clip_score_torchmetrics" not in m  # the cross-check is a test
    assert ev["reference"]["ground_truth"]["attribute_accuracy"] == 100.0
    assert ev["reference"]["tokenizer_reconstruction"]["attribute_accuracy"] == 100.0
    assert ev["clip"]["definition"].startswith("100 * max")
    for name in ("record.json", "samples.jsonl", "samples.png", "ppots.json", "model/config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 6
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["metrics"]["score"] == m["score"] and record["eval"]["text-to-image"]["n_eval"] == 6
    again = evaluate(tmp_path / "run", cfg.eval.accuracy, scorer=scorer, write=False)
    assert again["metrics"] == m
    with pytest.raises(ConfigError, match="unknown key; allowed: metric, clip_model"):
        evaluate_run(tmp_path / "run", {"stepz": 4})  # through mdm.eval's entry point: the task's own settings


def test_t2i_hooks_give_the_trainer_the_codec_s_ids_and_check_settings_before_compute(codec):
    from mdm.data import get_task, make_task
    from mdm.data.collate import format_chat
    from mdm.t2i.task import check
    from mdm.train import RunConfig
    from mdm.train.config import ModelConfig
    from mdm.train.model import tiny_tokenizer

    tok = tiny_tokenizer(ModelConfig(), "text-to-image")  # the tokenizer hook: the task's own vocabulary
    assert len(tok) == codec.vocab_size and tok.get_vocab() == codec.tokenizer.get_vocab()
    examples = make_task("text-to-image", "train", n=3, seed=0)  # the loader hook
    items = codec.items(make_examples("train", 3, seed=0))
    for ex, it in zip(examples, items):
        assert ex["task"] == "text-to-image" and set(ex["answer"]) == {"colour", "shape", "count", "position"}
        assert format_chat(tok, ex["prompt"], ex["response"]) == (it["input_ids"], it["prompt_length"])
    with pytest.raises(ConfigError, match="unknown key; allowed: image_tokenizer") as e:
        make_task("text-to-image", "train", n=3, level=1)
    assert e.value.where == "data.options.level"
    assert get_task("text-to-image").hook("run") is None  # no second training loop

    def cfg(**over):
        return RunConfig.model_validate({**t2i_run("x"), **over})

    check(cfg())
    hub = {"model": {"source": "Gen-Verse/MMaDA-8B-MixCoT"}}
    with pytest.raises(ConfigError, match="MAGVIT-v2") as e:  # a hub model with the tiny codebook: refused at once
        check(cfg(**hub))
    assert e.value.where == "data.options.image_tokenizer"
    check(cfg(**hub, data={"task": "text-to-image", "options": {"image_tokenizer": "magvitv2:showlab/magvitv2"}}))
    for bad, match in (({"clip_model": "ViT-B-32"}, "ViT-B-32/openai"), ({"steps": 0}, "greater than or equal"),
                       ({"schedule": "square"}, "cosine"), ({"limt": 3}, "unknown key")):
        with pytest.raises(ConfigError, match=match):
            check(cfg(eval={"accuracy": bad}))


def test_mdm_bench_runs_tiny_t2i_runs_and_the_report_shows_their_samples(tmp_path):
    """`mdm bench` trains task text-to-image (tiny) through the Trainer and scores it with the task's evaluate hook;
    `mdm report` adds the t2i summary and sample grid; a hub model with the tiny codebook is refused before compute."""
    import subprocess
    import sys

    import yaml

    run = t2i_run("-")
    tiny = {"tasks": {"text-to-image": {"n_train": 48, "max_length": 64}}, "model": run["model"],
            "training": {"max_steps": 4, "global_batch_size": 8, "micro_batch_size": 8, "threads": 1},
            "ppots_pilot": run["ppots_pilot"], "eval": {"accuracy": {"clip_model": "tiny", "limit": 6, "steps": 4}}}
    hub = {**tiny, "model": {"source": "Gen-Verse/MMaDA-8B-MixCoT"}}
    path, hub_path = tmp_path / "t2.yaml", tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"name": "t2", "seeds": [42], "methods": ["standard"], "presets": {"tiny": tiny}}))
    hub_path.write_text(yaml.safe_dump({"name": "t2", "seeds": [42], "methods": ["standard"],
                                        "presets": {"tiny": tiny, "hub": hub}}))

    def mdm(*args):
        return subprocess.run([sys.executable, "-m", "mdm.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=600)

    done = mdm("bench", path, "--results", tmp_path / "runs")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "runs/t2/text-to-image/standard/seed42/record.json").read_text())
    assert record["status"] == "done" and record["steps"] == 4 and record["eval"]["text-to-image"]["n_eval"] == 6
    assert record["eval"]["text-to-image"]["decoding"]["sampler"] == "maskgit"
    assert record["metrics"]["score"] == record["metrics"]["clip_score"] and "attribute_accuracy" in record["metrics"]
    assert record["n_heldout"] == 5 and record["metrics"]["heldout_loss"] > 0  # the held-out split applies
    report = mdm("report", tmp_path / "runs/t2", "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    readme = (tmp_path / "report/README.md").read_text()
    assert "(samples_grid.png)" in readme and "(text_to_image.md)" in readme and "maskgit" in readme
    assert (tmp_path / "report/samples_grid.png").is_file()
    summary = json.loads((tmp_path / "report/text_to_image_summary.json").read_text())
    assert summary["methods"]["standard"]["clip_score"]["seeds"] == [record["metrics"]["clip_score"]]

    refused = mdm("bench", hub_path, "--preset", "tiny", "--results", tmp_path / "hub")  # any preset: one line
    assert refused.returncode == 2 and "MAGVIT-v2" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert "data.options.image_tokenizer" in refused.stderr and not (tmp_path / "hub").exists()


def test_sigkill_of_a_t2i_run_then_rerun_resumes_the_same_trajectory(tmp_path):
    """Like text runs: `mdm train` on text-to-image killed with SIGKILL after a checkpoint resumes to the
    trajectory of an unbroken run."""
    import yaml

    from mdm.train import RunConfig, Trainer, read_log
    from tests.train.test_train import trajectory
    from tests.train.test_train_resume import kill_at, train_cli

    config = tmp_path / "run.yaml"
    run = t2i_run(tmp_path / "killed", method="mirror", max_steps=12, checkpoint_every=3)
    run["eval"].pop("accuracy")
    config.write_text(yaml.safe_dump(run))
    killed_at = kill_at(config, tmp_path / "killed", 5)
    assert 5 <= killed_at < 12 and not (tmp_path / "killed" / "result.json").exists()
    again = train_cli(config)
    assert again.returncode == 0, again.stderr
    result = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert result["status"] == "done" and len(result["resumed_from"]) == 1 and 3 <= result["resumed_from"][0]
    resumed = read_log(tmp_path / "killed")
    assert [e["step"] for e in resumed] == list(range(1, 13))
    Trainer(RunConfig.model_validate({**run, "output_dir": str(tmp_path / "unbroken")})).train()
    assert trajectory(resumed) == trajectory(read_log(tmp_path / "unbroken"))


def test_tiny_clip_trains_even_when_first_built_under_no_grad(tmp_path):
    """`mdm bench` builds the CLIP lazily inside the cell's no_grad evaluation: its training must still work."""
    from mdm.t2i.clip import TINY_CLIP_TRAIN, train_tiny_clip

    settings = {**TINY_CLIP_TRAIN, "n_pairs": 16, "steps": 2, "batch_size": 8, "warmup": 1}
    with torch.no_grad():
        log = train_tiny_clip(tmp_path, settings)
    assert log["steps"] == 2 and (tmp_path / "open_clip_model.pt").is_file()


def test_text_to_image_2m_loader_reads_shards_in_the_datasets_layout(tmp_path):
    """text-to-image-2M's layout (WebDataset tar shards, `<key>.jpg` + `<key>.json` with its `prompt`), generated here:
    streamed by the loader hook, the last shard as the test split, images encoded by the run's image tokenizer."""
    import io
    import tarfile

    from PIL import Image

    from mdm.data import make_task
    from mdm.t2i.scenes import make_examples

    scenes = make_examples("train", 6, seed=0)
    for shard in range(2):
        with tarfile.open(tmp_path / f"data_{shard:06d}.tar", "w") as tar:
            for i, e in enumerate(scenes[3 * shard : 3 * shard + 3]):
                key = f"{shard:03d}{i:05d}"
                jpg = io.BytesIO()
                Image.fromarray(e["image"]).save(jpg, format="JPEG", quality=95)
                for name, data in ((f"{key}.jpg", jpg.getvalue()),
                                   (f"{key}.json", json.dumps({"prompt": e["caption"]}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    options = {"images": "text-to-image-2m", "root": str(tmp_path)}
    train = make_task("text-to-image", "train", n=2, **options)
    test = make_task("text-to-image", "test", n=10, **options)
    assert [e["prompt"] for e in train] == [e["caption"] for e in scenes[:2]]  # the first shard, the first n
    assert [e["prompt"] for e in test] == [e["caption"] for e in scenes[3:]]  # the last shard
    assert all(len(e["codes"]) == 36 and e["task"] == "text-to-image" for e in train + test)
    with pytest.raises(ConfigError, match="images"):
        make_task("text-to-image", "train", n=2, images="laion")
