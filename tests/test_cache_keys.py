"""One rule for every cache of derived artifacts (mdm.cache): its key covers the inputs and the code that derives it,
so an edit of that code gives a new cache entry, never the old artifact. Each kind of `mdm.cache.DERIVED` is built
(or keyed) before and after a simulated edit of one module its derivation reaches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mdm import cache
from tests.helpers import FakeTokenizer, synthetic_batch

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"{a} + {b} = {a + b}" for a in range(30) for b in range(5)]


def clear():
    cache._parsed.cache_clear()
    cache.code_version.cache_clear()


@pytest.fixture
def edit(monkeypatch):
    """edit(module, text): code_version sees `module`'s source with `text` appended, as after an edit of it (the
    parse memo is read, never written: it never holds the edited sources)."""
    real, extra = cache._read_source, {}

    def read(path):
        return real(path) + extra.get(Path(path), "")

    cache.code_version(*(m for modules in cache.DERIVED.values() for m in modules))  # the memo of the real sources
    monkeypatch.setattr(cache, "_INDEX", {**cache._index(), **cache._INDEX_NEW})
    monkeypatch.setattr(cache, "_INDEX_NEW", {})
    monkeypatch.setattr(cache, "_save_index", lambda: None)
    monkeypatch.setattr(cache, "_read_source", read)

    def apply(module: str, text: str = "\n_EDITED = 1\n") -> None:
        extra[cache._module_file(module)] = text
        clear()

    clear()
    yield apply
    clear()


def folders(path: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in path.glob(pattern) if p.is_dir() and not p.name.startswith("."))


def test_every_cache_kind_names_its_deriving_modules_and_every_cached_dir_kind_is_one():
    assert set(cache.DERIVED) == {"tokenizer", "base", "pilot", "codebook", "clip", "codes"}
    for kind, modules in cache.DERIVED.items():
        assert set(modules) <= set(cache.code_modules(*modules)), kind
    # every kind given to the t2i cache (mdm.t2i.cache.cached_dir) is a kind of DERIVED, and every other cache's
    # key function includes derivation(<its kind>)
    sources = {p: p.read_text() for p in (ROOT / "mdm").rglob("*.py")}
    kinds = {k for text in sources.values() for k in re.findall(r'cached_dir\(\s*"(\w+)"', text)}
    assert kinds == {"codebook", "clip", "codes"}
    used = {k for text in sources.values() for k in re.findall(r"derivation\(\s*[\"'](\w+)[\"']", text)}
    assert used | kinds == set(cache.DERIVED)


def test_a_changed_derivation_code_gives_a_new_tokenizer(tmp_path, edit):
    from mdm.data import build_tokenizer

    build_tokenizer(TEXTS, vocab_size=300, cache_dir=tmp_path / "tok")
    build_tokenizer(TEXTS, vocab_size=300, cache_dir=tmp_path / "tok")
    assert len(folders(tmp_path / "tok")) == 1  # the same code: reused
    edit("mdm.data.tokenizer")
    build_tokenizer(TEXTS, vocab_size=300, cache_dir=tmp_path / "tok")
    assert len(folders(tmp_path / "tok")) == 2


def test_a_changed_derivation_code_gives_a_new_base(tmp_path, edit, monkeypatch):
    from mdm.train import model
    from mdm.train.config import RunConfig

    built = []

    def pretrain(base_cfg):  # stands in for the pretraining run: what ensure_base keeps of it
        out = Path(base_cfg.output_dir)
        (out / "model").mkdir(parents=True)
        (out / "model" / "config.json").write_text("{}")
        (out / "train_log.jsonl").write_text("")
        built.append(out)

    monkeypatch.setattr(model, "_pretrain", pretrain)
    cfg = RunConfig.model_validate({"model": {"base": "auto", "cache_dir": str(tmp_path)},
                                    "data": {"task": "arith"}, "output_dir": str(tmp_path / "run")})
    first = model.ensure_base(cfg)
    assert model.ensure_base(cfg) == first and len(built) == 1
    edit("mdm.objective.objective")  # the loss a base is pretrained with
    second = model.ensure_base(cfg)
    assert second != first and len(built) == 2 and len(folders(tmp_path / "bases")) == 2


def test_changing_the_ppots_fit_code_gives_a_new_pilot(tmp_path, edit):
    from mdm.models import build_tiny_model
    from mdm.tiny import TinySize
    from mdm.train import ppots
    from mdm.train.config import PilotConfig

    net = build_tiny_model(FakeTokenizer(), size=TinySize(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          num_key_value_heads=1, head_dim=16, intermediate_size=64))
    batch = synthetic_batch(8)

    def collate(rows):
        index = torch.tensor(rows)
        return type(batch)(batch.input_ids[index], batch.attention_mask[index], batch.prompt_lengths[index])

    def fit():
        return ppots.fit_density(model=net, items=list(range(8)), collate=collate, mask_token_id=1,
                                 pilot=PilotConfig(a=2, b=10, c=2, restarts=1), device="cpu",
                                 cache_dir=tmp_path / "ppots")

    first, again = fit(), fit()
    assert first["pilot_cache"]["reused"] is False and again["pilot_cache"] == {
        "key": first["pilot_cache"]["key"], "reused": True, "fitted_by": None}
    edit("mdm.variance.epr", "\ndef _another_fit_step():\n    return 0\n")  # the EPR fit's code path
    edited = fit()
    assert edited["pilot_cache"]["reused"] is False and edited["pilot_cache"]["key"] != first["pilot_cache"]["key"]
    assert len(list((tmp_path / "ppots").glob("*.json"))) == 2


def test_a_changed_derivation_code_gives_a_new_codebook(tmp_path, edit):
    from mdm.t2i.image_tokenizer import tiny_image_tokenizer

    tiny_image_tokenizer(tmp_path, n_images=12, codebook_size=8)
    assert len(folders(tmp_path, "codebook-*")) == 1
    edit("mdm.t2i.image_tokenizer")
    tiny_image_tokenizer(tmp_path, n_images=12, codebook_size=8)
    assert len(folders(tmp_path, "codebook-*")) == 2


def test_a_changed_derivation_code_gives_a_new_clip(tmp_path, edit):
    from mdm.t2i.cache import cached_dir

    def build(folder):  # stands in for train_tiny_clip (a CPU minute)
        (folder / "open_clip_model.pt").write_text("weights")

    first = cached_dir("clip", {"train": {"steps": 1}}, build, tmp_path)
    assert cached_dir("clip", {"train": {"steps": 1}}, build, tmp_path) == first
    assert json.loads((first / "cache_key.json").read_text())["code"] == cache.derivation("clip")
    edit("mdm.t2i.clip")
    assert cached_dir("clip", {"train": {"steps": 1}}, build, tmp_path) != first
    assert len(folders(tmp_path, "clip-*")) == 2


def test_a_changed_derivation_code_gives_new_image_codes(tmp_path, edit):
    from mdm.t2i.codes import cached_codes
    from mdm.t2i.image_tokenizer import tiny_image_tokenizer
    from mdm.t2i.scenes import make_examples
    from mdm.t2i.task import task_options

    tok = tiny_image_tokenizer(tmp_path, n_images=12, codebook_size=8)
    pairs = [{"caption": e["caption"], "image": e["image"], "id": e["id"]} for e in make_examples("train", 4, seed=0)]

    def codes():
        return cached_codes("train", 4, task_options({}), tok, batch_size=2, cache_dir=tmp_path, pairs=pairs)

    first = codes()
    assert codes() == first and len(folders(tmp_path, "codes-*")) == 1
    edit("mdm.t2i.codes")  # the encoding path
    assert codes() == first and len(folders(tmp_path, "codes-*")) == 2  # encoded again under a new key


def test_comments_docstrings_and_code_outside_a_derivation_leave_its_key(edit):
    before = {kind: cache.derivation(kind) for kind in cache.DERIVED}
    edit("mdm.variance.epr", "\n# a comment\n")
    assert cache.derivation("pilot") == before["pilot"]
    edit("mdm.report.render", "\n_EDITED = 1\n")  # the report does not derive any cached artifact
    assert {kind: cache.derivation(kind) for kind in cache.DERIVED} == before
    edit("mdm.variance.epr", "\ndef f():\n    '''only a docstring'''\n")
    assert cache.derivation("pilot") != before["pilot"]  # a new function is code
    edit("mdm.variance.epr", "\n\n")
    assert cache.derivation("pilot") == before["pilot"]


def test_deferred_and_string_named_modules_are_reached():
    base = cache.code_modules("mdm.train.model")
    assert "mdm.train.trainer" in base  # imported inside _pretrain
    assert "mdm.t2i.task" in base  # a task hook, "mdm.t2i.task:loader"
    pilot = cache.code_modules(*cache.DERIVED["pilot"])
    assert {"mdm.variance.profile", "mdm.variance.epr", "mdm.variance.fit"} <= set(pilot)  # import_module("...")
    assert not {m for m in base + pilot if m.startswith(("mdm.report", "mdm.bench"))}
