"""Data layer: generated tasks, loaders, tokenizer, span marking and collation."""

import json
import re
from html.parser import HTMLParser

import pytest
import torch

from mdm.data import Collator, build_tokenizer, format_chat, make_task, mark_spans, mask_token_id_of
from mdm.data import tokenizer as tokmod
from mdm.data.collate import token_texts, tokenize_examples
from mdm.data.tasks import (
    BOXED_DELIMITERS,
    GSM8K_DELIMITERS,
    HTML_SYNTAX,
    TASKS,
    get_task,
    load_hitab,
    load_openscience,
    select_openscience,
)
from mdm.errors import ConfigError
from mdm.eval.scorers import gsm8k_authors, gsm8k_flexible, gsm8k_strict, hitab_aggregate, hitab_score


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [
        e["prompt"] + "\n" + e["response"] for t in ("arith", "tables") for e in make_task(t, "train", 300)
    ]
    return build_tokenizer(texts, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


# ---------------------------------------------------------------- generated tasks


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("name", ["arith", "tables"])
def test_generated_deterministic_and_disjoint(name, level):
    a, b = make_task(name, "train", 300, seed=0, level=level), make_task(name, "train", 300, seed=0, level=level)
    assert a == b
    assert make_task(name, "train", 300, seed=1, level=level) != a
    assert make_task(name, "train", 300, seed=0, level=3 - level) != a
    test = make_task(name, "test", 200, seed=0, level=level) + make_task(name, "test", 200, seed=1, level=level)
    train = {e["prompt"] for e in a + make_task(name, "train", 300, seed=1, level=level)}
    assert not train & {e["prompt"] for e in test}
    assert len({e["prompt"] for e in a}) == len(a)  # deduplicated
    assert len({e["id"] for e in a}) == len(a)
    for e in a[:20]:
        assert set(e) == {"prompt", "response", "answer", "task", "id"} and e["task"] == name


_EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x / y}


def test_generated_task_defaults_to_level_2_and_rejects_bad_options():
    assert make_task("arith", "train", 50) == make_task("arith", "train", 50, level=2)
    with pytest.raises(ConfigError, match=r"task\.options\.level.*allowed: 1, 2"):
        make_task("arith", "train", 5, level=3)
    with pytest.raises(ConfigError, match=r"task\.options\.root.*only the option 'level'"):
        make_task("tables", "train", 5, root="/x")


@pytest.mark.parametrize("level", [1, 2])
def test_arith_answers_are_correct(level):
    for e in make_task("arith", "train", 400, level=level) + make_task("arith", "test", 100, level=level):
        eqs = _EQ.findall(e["response"])
        assert (len(eqs) == 1 and all(int(n) < 10 for n in eqs[0][:3:2])) if level == 1 else 2 <= len(eqs) <= 3
        for x, op, y, z in eqs:
            assert _OPS[op](int(x), int(y)) == int(z), e["response"]
        assert e["response"].splitlines()[-1] == f"#### {e['answer']}" and eqs[-1][3] == e["answer"]
        numbers_in_prompt = set(re.findall(r"\d+", e["prompt"]))
        assert numbers_in_prompt <= {n for eq in eqs for n in (eq[0], eq[2], eq[3])}, e
        assert all(int(n) < 20 for n in numbers_in_prompt)
        assert gsm8k_authors(e["response"], e["response"]) and gsm8k_authors(e["response"], e["answer"])
        assert gsm8k_strict(e["response"], e["response"]) and gsm8k_flexible(e["response"], e["response"])


class _Grid(HTMLParser):
    """HTML table -> cell grid with rowspan/colspan expanded (an independent reader of our renderer)."""

    def __init__(self):
        super().__init__()
        self.cells, self.row, self.cell = {}, -1, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.row += 1
        elif tag in ("td", "th"):
            a = dict(attrs)
            self.cell = ["", int(a.get("rowspan", 1)), int(a.get("colspan", 1))]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            (text, rs, cs), self.cell, c = self.cell, None, 0
            text = text.strip()  # level 1 spaces its cells (`<td> 6</td>`)
            while (self.row, c) in self.cells:
                c += 1
            for i in range(rs):
                for j in range(cs):
                    self.cells[(self.row + i, c + j)] = text if i == j == 0 else ""

    def table(self):
        ncols = max(c for _, c in self.cells) + 1
        return [[self.cells.get((r, c), "") for c in range(ncols)] for r in range(self.row + 1)]


def _recompute_table_answer(prompt: str) -> tuple[str, str]:
    html_part, question = prompt.split("\nQuestion: ")
    p = _Grid()
    p.feed(html_part)
    t = p.table()
    years, subs = t[0], t[1]
    col = {}
    for c in range(2, len(subs)):
        year = years[c] or years[c - 1]
        col[(year, subs[c])] = c
    rows = {r[1]: r for r in t[2:]}
    if m := re.fullmatch(r"how many (\S+) \w+ were there in (.+) in (\d+)\?", question):
        return "lookup", rows[m[2]][col[(m[3], m[1])]]
    if m := re.fullmatch(r"how many \w+ were there in (.+) in (\d+), (\S+) and (\S+) combined\?", question):
        return "sum", str(int(rows[m[1]][col[(m[2], m[3])]]) + int(rows[m[1]][col[(m[2], m[4])]]))
    if m := re.fullmatch(r"how many more (\S+) \w+ were there in (.+) than in (.+) in (\d+)\?", question):
        c = col[(m[4], m[1])]
        return "diff", str(int(rows[m[2]][c]) - int(rows[m[3]][c]))
    if m := re.fullmatch(r"which .+ had the most (\S+) \w+ in (\d+)\?", question):
        c = col[(m[2], m[1])]
        return "max", max(rows, key=lambda label: int(rows[label][c]))
    raise AssertionError(f"unknown question {question!r}")


@pytest.mark.parametrize("level", [1, 2])
def test_tables_answers_are_correct_and_score_full_marks(level):
    examples = make_task("tables", "train", 300, level=level) + make_task("tables", "test", 100, level=level)
    kinds = set()
    for e in examples:
        assert e["prompt"].startswith("<table><thead><tr><th") and 'colspan="2"' in e["prompt"]
        if level == 1:  # one year, 1-2 rows of one-digit values
            cells = re.findall(r"<td>([^<]*)<", e["prompt"])
            assert len(cells) in (2, 4) and all(re.fullmatch(r" \d", v) for v in cells), e["prompt"]
            assert all(v.startswith(" ") for v in re.findall(r"<th[^>]*>([^<]+)<", e["prompt"]))  # spaced cells
        else:
            assert not re.findall(r"<t[dh][^>]*> ", e["prompt"])
        kind, answer = _recompute_table_answer(e["prompt"])
        assert answer == e["answer"][0], e
        assert e["response"].endswith(f"\\boxed{{{answer}}}.")
        kinds.add(kind)
    assert kinds == {"lookup", "sum", "diff", "max"}
    agg = hitab_aggregate(hitab_score(e["response"], e["answer"]) for e in examples)
    assert agg["accuracy"] == agg["precision"] == agg["f1"] == 1.0


def test_task_declarations():
    assert get_task("arith").delimiters == GSM8K_DELIMITERS == get_task("gsm8k").delimiters
    for name in ("tables", "hitab", "openscience"):
        assert get_task(name).delimiters == BOXED_DELIMITERS
    for tag in ("<table>", "</table>", "<tr>", "</td>", "<th>", "<thead>", "</tbody>", "<", ">", "</"):
        assert tag in get_task("tables").syntax_patterns and tag in get_task("hitab").syntax_patterns
    assert not get_task("arith").syntax_patterns and not get_task("openscience").syntax_patterns
    text = r"so \boxed{\frac{1}{2}} and {x}"
    spans = get_task("tables").delimiter_spans(text)
    assert [text[s:e] for s, e in spans] == ["\\boxed{", "}"] and spans[1][0] == text.index("}}") + 1


def test_unknown_task_and_split():
    with pytest.raises(ValueError, match="allowed: arith, tables, gsm8k, hitab, openscience"):
        make_task("nope")
    with pytest.raises(ValueError, match="allowed: train, test"):
        make_task("arith", "dev", 5)
    with pytest.raises(ValueError, match="MDM_HITAB_DIR"):
        make_task("hitab", "test")


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_special_tokens(tok):
    for name in ("pad", "bos", "eos", "mask"):
        assert getattr(tok, f"{name}_token_id") is not None
    assert tok.mask_token == "<|mdm_mask|>"
    for t in tokmod.SPECIAL_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] in tok.all_special_ids
    assert len(tok) == 512
    assert tok.decode(tok("12 apples <td>", add_special_tokens=False)["input_ids"]) == "12 apples <td>"
    assert mask_token_id_of(tok) == tok.convert_tokens_to_ids("<|mdm_mask|>")


def test_tokenizer_cache_and_determinism(tmp_path, monkeypatch):
    texts = [e["prompt"] for e in make_task("arith", "train", 100)]
    a = build_tokenizer(texts, 300, cache_dir=tmp_path / "a")
    b = build_tokenizer(texts, 300, cache_dir=tmp_path / "b")
    assert a.get_vocab() == b.get_vocab()  # deterministic training
    monkeypatch.setattr(tokmod, "_train", lambda *a: pytest.fail("retrained instead of loading the cache"))
    c = build_tokenizer(texts, 300, cache_dir=tmp_path / "a")
    assert c.get_vocab() == a.get_vocab() and c.mask_token_id == a.mask_token_id
    monkeypatch.setenv("MDM_CACHE", str(tmp_path / "env"))
    with pytest.raises(pytest.fail.Exception):  # a different key (vocab size) is not in the cache
        build_tokenizer(texts, 301)
    assert tokmod.default_cache_dir() == tmp_path / "env" / "tokenizers"


def test_mask_token_id_of():
    class Cfg:
        mask_token_id = 7

    class LLaDALike:  # no mask_token attribute, but the token is in the vocabulary
        mask_token_id = None

        def get_vocab(self):
            return {"a": 0, "<|mdm_mask|>": 126336}

    class Bare(LLaDALike):
        def get_vocab(self):
            return {"a": 0}

    class LLaDACfg:
        model_type, mask_token_id = "llada", 126336

    assert mask_token_id_of(LLaDALike(), LLaDACfg()) == 126336
    assert mask_token_id_of(Bare(), Cfg()) == 7
    assert mask_token_id_of(LLaDALike()) == 126336
    with pytest.raises(ConfigError, match="config mask_token_id 7 but the tokenizer's mask token is 126336"):
        mask_token_id_of(LLaDALike(), Cfg())  # config and tokenizer disagree
    with pytest.raises(ConfigError, match="mask_token_id"):
        mask_token_id_of(Bare())


# ---------------------------------------------------------------- formatting and spans


def test_format_chat_plain(tok):
    ids, p0 = format_chat(tok, "What is 2 + 3?", "2 + 3 = 5\n#### 5")
    assert ids[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("<|user|>")]
    assert ids[p0 - 1] == tok.convert_tokens_to_ids("<|assistant|>") and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[p0:-1]) == "2 + 3 = 5\n#### 5"


def test_format_chat_template(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    tok = tok.__class__.from_pretrained(tmp_path)  # a copy: the module's tokenizer keeps no template
    tok.chat_template = (  # LLaDA-style: the generation prompt is the assistant header
        "{{ bos_token }}{% for m in messages %}<h>{{ m['role'] }}</h>\n\n{{ m['content'] }}<e>{% endfor %}"
        "{% if add_generation_prompt %}<h>assistant</h>\n\n{% endif %}"
    )
    ids, p0 = format_chat(tok, "hi there", "#### 5")
    assert tok.decode(ids[:p0]) == "<|bos|><h>user</h>\n\nhi there<e>"
    assert tok.decode(ids[p0:]) == "<h>assistant</h>\n\n#### 5<|eos|>"  # header belongs to the response


def test_token_texts_concatenate_to_decoded_text(tok):
    text = "Ünïcode 😀 \\boxed{12} <td>7</td>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert "".join(token_texts(tok, ids)) == text
    assert "".join(token_texts(tok, ids, 3, 9)) == tok.decode(ids[3:9]).lstrip("\ufffd")


def test_mark_spans_patterns_over_several_tokens(tok):
    text = "x \\boxed{\\frac{1}{2}} y #### 3"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_texts(tok, ids)
    flags = mark_spans(tok, ids, get_task("tables").delimiter_spans)
    marked = "".join(p for p, f in zip(pieces, flags) if f)
    assert "boxed" in marked and marked.count("}") == 1  # only the box's own closing brace
    first = flags.index(True)
    run = first + flags[first:].index(False)
    assert "\\boxed{" in "".join(pieces[first:run]) and run - first >= 2  # one pattern, several tokens
    flags = mark_spans(tok, ids, ["####"])
    assert "".join(p for p, f in zip(pieces, flags) if f).strip() == "####"
    # a range restriction: nothing outside [start, end) is marked, and patterns are looked for inside it only
    half = len(ids) // 2
    assert not any(mark_spans(tok, ids, ["####"], end=half))
    assert mark_spans(tok, ids, ["boxed"], start=half) == [False] * len(ids)
    assert mark_spans(tok, ids, []) == [False] * len(ids)


def test_mark_spans_ignores_special_tokens(tok):
    ids, p0 = format_chat(tok, "<table><tr><td>3</td></tr></table>", "ok")
    flags = mark_spans(tok, ids, HTML_SYNTAX, end=p0)
    specials = set(tok.all_special_ids)
    assert not any(f for i, f in zip(ids, flags) if i in specials)
    prompt = zip(token_texts(tok, ids, 0, p0), flags, ids)
    assert "".join(p for p, f, i in prompt if i not in specials and not f) == "3"  # all the rest is syntax


# ---------------------------------------------------------------- collation


def test_collator_batch(tok):
    examples = make_task("tables", "train", 6)
    items, dropped = tokenize_examples(tok, examples, "tables", max_length=1024)
    assert dropped == 0 and len(items) == 6
    batch = Collator(tok, "tables", 1024)(items)
    lengths = [len(it["input_ids"]) for it in items]
    assert batch.input_ids.shape == (6, max(lengths)) and batch.input_ids.dtype == torch.long
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert batch.prompt_lengths.tolist() == [it["prompt_length"] for it in items]
    for i, n in enumerate(lengths):
        assert (batch.input_ids[i, n:] == tok.pad_token_id).all()
    idx = torch.arange(batch.input_ids.shape[1])[None]
    prompt = idx < batch.prompt_lengths[:, None]
    assert batch.delimiter_mask.dtype == torch.bool and batch.syntax_mask.dtype == torch.bool
    assert not (batch.delimiter_mask & (prompt | ~batch.attention_mask.bool())).any()
    assert not (batch.syntax_mask & ~prompt).any()
    assert (batch.delimiter_mask.sum(1) >= 2).all() and (batch.syntax_mask.sum(1) > 20).all()
    assert (batch.delimiter_mask <= batch.response_mask()).all()
    # raw examples are tokenized on the fly, identically
    again = Collator(tok, "tables", 1024)(examples)
    assert torch.equal(again.input_ids, batch.input_ids) and torch.equal(again.syntax_mask, batch.syntax_mask)


def test_collator_arith_and_dropping(tok):
    examples = make_task("arith", "train", 20)
    items, dropped = tokenize_examples(tok, examples, "arith", max_length=10_000)
    batch = Collator(tok, get_task("arith"), 10_000)(items)
    assert not batch.syntax_mask.any() and (batch.delimiter_mask.sum(1) >= 1).all()
    cut = sorted(len(it["input_ids"]) for it in items)[10]
    kept, dropped = tokenize_examples(tok, examples, "arith", max_length=cut)
    assert len(kept) + dropped == 20 and dropped > 0 and all(len(k["input_ids"]) <= cut for k in kept)
    with pytest.raises(ValueError, match="tokenize_examples"):
        Collator(tok, "arith", cut)(examples)


# ---------------------------------------------------------------- HiTab loader


def _write_hitab(root, samples_lines):
    (root / "data" / "tables" / "raw").mkdir(parents=True)
    table = {
        "texts": [["", "2019", "", "2020", ""], ["", "men", "women", "men", "women"],
                  ["canada", "10", "12.5", "11", "13"], ["quebec", "3", "4", "3", "5"]],
        "title": "workers by province", "top_root": {}, "left_root": {},
        "top_header_rows_num": 2, "left_header_columns_num": 1,
        "merged_regions": [{"first_row": 0, "last_row": 1, "first_column": 0, "last_column": 0},
                           {"first_row": 0, "last_row": 0, "first_column": 1, "last_column": 2},
                           {"first_row": 0, "last_row": 0, "first_column": 3, "last_column": 4}],
    }  # fmt: skip
    (root / "data" / "tables" / "raw" / "t1.json").write_text(json.dumps(table))
    (root / "data" / "test_samples.jsonl").write_text("\n".join(samples_lines) + "\n")


def _sample(i, table_id="t1", **kw):
    s = {"id": f"s{i}", "table_id": table_id, "question": "how many women in canada in 2019?",
         "answer": [12.5], "aggregation": ["none"], "linked_cells": {}}  # fmt: skip
    s.update(kw)
    return json.dumps(s)


def test_hitab_loader(tmp_path):
    _write_hitab(tmp_path, [_sample(0), _sample(1, answer=["a", 2.0], question="q?")])
    out = load_hitab(tmp_path, "test")
    assert len(out) == 2 and out[0]["id"] == "s0" and out[0]["task"] == "hitab"
    p = out[0]["prompt"]
    assert p.startswith(
        'workers by province\n<table><thead><tr><th rowspan="2"></th><th colspan="2">2019</th>'
    )
    assert "</thead><tbody><tr><th>canada</th><td>10</td><td>12.5</td>" in p
    assert p.endswith("Question: how many women in canada in 2019?")
    assert out[0]["answer"] == ["12.5"] and out[1]["answer"] == ["a", "2"]
    assert out[1]["response"] == "The answer is \\boxed{a}, \\boxed{2}."
    assert all(hitab_score(e["response"], e["answer"])["accuracy"] == 1.0 for e in out)
    assert make_task("hitab", "test", n=1, root=str(tmp_path)) == out[:1]


def test_hitab_loader_errors(tmp_path):
    _write_hitab(tmp_path / "a", [_sample(0), _sample(1, table_id="missing")])
    with pytest.raises(FileNotFoundError, match=r"missing\.json.*test_samples\.jsonl:2"):
        load_hitab(tmp_path / "a", "test")
    _write_hitab(tmp_path / "b", [_sample(0), "{not json"])
    with pytest.raises(ValueError, match=r"test_samples\.jsonl:2: not valid JSON"):
        load_hitab(tmp_path / "b", "test")
    _write_hitab(
        tmp_path / "c", [_sample(0), _sample(1), json.dumps({"id": "x", "table_id": "t1", "answer": []})]
    )
    with pytest.raises(ValueError, match=r"test_samples\.jsonl:3: missing key 'question'"):
        load_hitab(tmp_path / "c", "test")
    with pytest.raises(FileNotFoundError, match=r"dev_samples\.jsonl"):
        load_hitab(tmp_path / "c", "dev")
    _write_hitab(tmp_path / "d", [_sample(0)])
    (tmp_path / "d" / "data" / "tables" / "raw" / "t1.json").write_text(json.dumps({"texts": []}))
    with pytest.raises(ValueError, match=r"t1\.json: missing key 'top_header_rows_num'"):
        load_hitab(tmp_path / "d", "test")


# ---------------------------------------------------------------- GSM8K and OpenScience loaders


def test_gsm8k_loader_reads_shared_files():
    train, test = make_task("gsm8k", "train"), make_task("gsm8k", "test")
    assert (len(train), len(test)) == (7473, 1319)
    e = test[0]
    assert e["prompt"].startswith("Janet") and e["response"].endswith("#### 18") and e["answer"] == "18"
    assert all(gsm8k_authors(x["response"], x["response"]) for x in test)
    assert len(make_task("gsm8k", "test", n=5)) == 5


def test_gsm8k_dir_env_override(tmp_path, monkeypatch):
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "a\n#### -4"}) + "\n")
    monkeypatch.setenv("MDM_GSM8K_DIR", str(tmp_path))
    assert make_task("gsm8k", "test") == [
        {"prompt": "q", "response": "a\n#### -4", "answer": "-4", "task": "gsm8k", "id": "gsm8k-test-0"}
    ]


def test_hub_fallbacks(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"question": "q", "answer": "#### 1"}] if args[0] == "openai/gsm8k" else _science_rows()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("MDM_GSM8K_DIR", str(tmp_path / "absent"))
    assert make_task("gsm8k", "train")[0]["answer"] == "1"
    assert make_task("openscience", "test", n=2, n_train=3, count_tokens=len)[0]["id"] == "openscience-3"  # rows 0-2 train
    assert calls == [
        (("openai/gsm8k", "main"), {"split": "train"}),
        (("nvidia/OpenScienceReasoning-2",), {"split": "train", "streaming": True}),
    ]


def _science_rows():
    rows = []
    for i in range(40):
        out = (
            f"think {i} " + ("long " * 50 if i % 7 == 3 else "") + (r"\boxed{B}" if i % 5 != 4 else "no box")
        )
        rows.append({"input": f"question {i}", "output": out})
    return rows


def test_openscience_selection():
    rows = _science_rows()
    count = lambda text: len(text.split())  # a stand-in tokenizer: words
    opts = dict(n_train=10, n_eval=5, max_tokens=30, count_tokens=count)
    train = select_openscience(iter(rows), "train", **opts)
    test = select_openscience(rows, "test", **opts)
    usable = [i for i in range(40) if i % 7 != 3 and i % 5 != 4]
    assert [e["id"] for e in train] == [f"openscience-{i}" for i in usable[:10]]
    assert [e["id"] for e in test] == [f"openscience-{i}" for i in usable[10:15]]
    assert all(e["answer"] == "B" and e["task"] == "openscience" for e in train + test)
    assert len(select_openscience(rows, "test", n=2, **opts)) == 2
    with pytest.raises(ValueError, match="allowed: train, test"):
        select_openscience(rows, "dev", count_tokens=count)


def test_openscience_loader_counts_with_the_tokenizer(tok):
    rows = _science_rows()
    limit = len(tok("question 0think 0 \\boxed{B}", add_special_tokens=False)["input_ids"]) + 1
    out = load_openscience("train", dataset=rows, tokenizer=tok, max_tokens=limit, n_train=3)
    assert [e["id"] for e in out] == ["openscience-0", "openscience-1", "openscience-2"]
    assert make_task("openscience", "train", dataset=rows, tokenizer=tok, max_tokens=1) == []


def test_real_task_names_are_registered():
    assert set(TASKS) == {"arith", "tables", "gsm8k", "hitab", "openscience", "text-to-image", "dataset", "arithlong"}
    with pytest.raises(ConfigError):
        get_task("GSM8K")
