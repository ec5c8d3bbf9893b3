"""Table 2's data path (issue 28, item 4): text-to-image-2M streamed, its images encoded in batches once per
(subset, resolution, tokenizer) and cached; decoding for CLIP in batches. Offline: the tiny k-means tokenizer (and
a tiny MAGVIT-v2 of MMaDA's code) on generated shards in the dataset's layout."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from mdm.data import make_task
from mdm.t2i.codes import cached_codes, code_key, decode_batches, encode_batches
from mdm.t2i.image_tokenizer import tiny_image_tokenizer
from mdm.t2i.scenes import make_examples
from mdm.t2i.task import task_options
from tests.llada_fixture import MMADA_CODE

pytestmark = pytest.mark.usefixtures("one_thread")


def write_shards(root, scenes, per_shard: int, scale: int = 2):
    """text-to-image-2M's layout: WebDataset tars of `<key>.jpg` + `<key>.json` ({"prompt"}); images `scale` times
    the tokenizer's resolution, as the real 512 px ones are for a smaller resolution."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for shard in range(0, len(scenes), per_shard):
        with tarfile.open(root / f"data_{shard // per_shard:06d}.tar", "w") as tar:
            for i, e in enumerate(scenes[shard : shard + per_shard]):
                img = Image.fromarray(e["image"]).resize((e["image"].shape[1] * scale,) * 2, Image.NEAREST)
                jpg = io.BytesIO()
                img.save(jpg, format="PNG")  # lossless: the test compares codes
                key = f"{shard:03d}{i:05d}"
                for name, data in ((f"{key}.jpg", jpg.getvalue()),
                                   (f"{key}.json", json.dumps({"prompt": e["caption"]}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


class Counting:
    """An image tokenizer that counts its calls and the batch sizes it was given."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, images):
        self.calls.append(len(images))
        return self.inner.encode(images)

    def decode(self, codes):
        self.calls.append(len(codes))
        return self.inner.decode(codes)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_image_tokenizer(tmp_path_factory.mktemp("t2i"))


def test_streamed_batched_encoding_is_cached_per_subset(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("MDM_CACHE", str(tmp_path / "cache"))
    scenes = make_examples("train", 11, seed=0)
    write_shards(tmp_path / "shards", scenes + make_examples("test", 3, seed=0), per_shard=11)
    o = task_options({"images": "text-to-image-2m", "root": str(tmp_path / "shards"), "encode_batch_size": 4})
    counting = Counting(tok)
    rows = cached_codes("train", 10, o, counting, batch_size=4)
    assert counting.calls == [4, 4, 2]  # 10 images, 4 per encode call
    assert [r["caption"] for r in rows] == [e["caption"] for e in scenes[:10]]
    alone = tok.encode(np.stack([e["image"] for e in scenes[:10]])).tolist()  # the scenes at the tokenizer's size
    assert [r["codes"] for r in rows] == alone  # resized back from 2x: the same codes
    again = cached_codes("train", 10, o, counting, batch_size=7)
    assert again == rows and counting.calls == [4, 4, 2]  # cached: no encoding (the batch size is not in the key)
    folders = [f for f in (tmp_path / "cache" / "t2i").glob("codes-*") if f.is_dir()]
    assert len(folders) == 1 and (folders[0] / "codes.npy").is_file()
    assert json.loads((folders[0] / "cache_key.json").read_text())["version"] >= 1
    # another subset, another key; the task's loader goes through the same cache
    cached_codes("train", 6, o, counting, batch_size=4)
    assert counting.calls == [4, 4, 2, 4, 2]
    assert len([f for f in (tmp_path / "cache" / "t2i").glob("codes-*") if f.is_dir()]) == 2
    loaded = make_task("text-to-image", "train", n=10, **o.model_dump(exclude_none=True))
    assert [e["codes"] for e in loaded] == alone and loaded[0]["response"].startswith("<|img_")


def test_the_key_covers_what_changes_the_codes(tmp_path, tok):
    o = task_options({"images": "text-to-image-2m", "root": str(tmp_path)})
    write_shards(tmp_path, make_examples("train", 2, seed=0), per_shard=2)
    base = code_key(o, "train", 2, tok)
    assert code_key(o, "test", 2, tok) != base and code_key(o, "train", 3, tok) != base
    other = tiny_image_tokenizer(tmp_path / "other", codebook_size=32)
    assert code_key(o, "train", 2, other)["weights"] != base["weights"]
    write_shards(tmp_path, make_examples("train", 2, seed=1), per_shard=2, scale=3)  # the shard rewritten
    assert code_key(o, "train", 2, tok)["source"] != base["source"]


def test_the_stream_is_never_held_whole(tok):
    seen = []

    def stream():
        for e in make_examples("train", 9, seed=0):
            seen.append(e["id"])
            yield {"caption": e["caption"], "image": e["image"], "id": e["id"]}

    sizes = []
    for meta, codes in encode_batches(stream(), tok, batch_size=4):
        sizes.append((len(meta), len(seen)))  # when a batch is encoded, only its images have been read
        assert codes.shape == (len(meta), tok.num_tokens)
    assert sizes == [(4, 4), (4, 8), (1, 9)]


def test_decoding_for_clip_is_batched(tok):
    codes = tok.encode(np.stack([e["image"] for e in make_examples("test", 5, seed=0)]))
    counting = Counting(tok)
    images = decode_batches(counting, codes, batch_size=2)
    assert counting.calls == [2, 2, 1] and np.array_equal(images, tok.decode(codes))


@pytest.mark.skipif(not MMADA_CODE.is_dir(), reason="MMaDA's code fixture not found")
def test_a_magvit_v2_encodes_in_batches_and_is_keyed_by_its_weights(tmp_path, monkeypatch):
    from mdm.t2i.image_tokenizer import MagvitV2Tokenizer
    from mdm.t2i.magvit import tiny_magvit

    monkeypatch.setenv("MDM_CACHE", str(tmp_path / "cache"))
    a = MagvitV2Tokenizer(tiny_magvit(tmp_path / "a", seed=0, code_dir=MMADA_CODE), code_dir=MMADA_CODE)
    b = MagvitV2Tokenizer(tiny_magvit(tmp_path / "b", seed=1, code_dir=MMADA_CODE), code_dir=MMADA_CODE)
    write_shards(tmp_path / "shards", make_examples("train", 5, seed=0), per_shard=5)
    o = task_options({"images": "text-to-image-2m", "root": str(tmp_path / "shards")})
    rows = cached_codes("train", 5, o, a, batch_size=2)
    from PIL import Image

    big = [Image.fromarray(e["image"]).resize((48, 48), Image.NEAREST) for e in make_examples("train", 5, seed=0)]
    # 2 images per call: the codes of one call over all five (convolutions of other batch shapes may round
    # differently on other CPU kernels; a sign flip of a near-zero latent changes one code)
    same = np.mean(np.array([r["codes"] for r in rows]) == a.encode(big).numpy())
    assert same >= 0.99, same
    assert code_key(o, "train", 5, a)["weights"] != code_key(o, "train", 5, b)["weights"]



def test_greedy_image_decoding_is_sharded_by_batch_over_a_launch():
    """Rank r of a launch decodes batches r, r + world, ... of the captions (the batches one process decodes); rank 0
    gathers them in order; each batch is told where it starts in the whole list (its draws are keyed by it)."""
    import torch

    from mdm.eval.distributed import Ranks
    from mdm.t2i.task import _generate, eval_settings

    class Fmt:
        def __init__(self):
            self.batches = []

        def generate(self, model, captions, *, batch_size, first=0, **knobs):
            self.batches.append(list(captions))
            return torch.tensor([[len(c), first + i] for i, c in enumerate(captions)])

    shares = {}

    class Rank(Ranks):  # 2 processes, simulated one after the other: rank 1's share is what rank 0 gathers
        def gather(self, obj):
            shares[self.rank] = obj
            return [shares.get(0), shares.get(1)]

        def barrier(self):
            pass

    captions = [f"caption {'x' * i}" for i in range(7)]
    s = eval_settings({"batch_size": 3})
    one = Fmt()
    whole = _generate(one, None, captions, s, Ranks())
    assert one.batches == [captions]  # one process: one call, as before
    r1, r0 = Fmt(), Fmt()
    assert _generate(r1, None, captions, s, Rank(1, 2)) is None
    merged = _generate(r0, None, captions, s, Rank(0, 2))
    assert r0.batches == [captions[0:3], captions[6:7]] and r1.batches == [captions[3:6]]
    assert torch.equal(merged, whole)  # the same rows, keyed by the same places
