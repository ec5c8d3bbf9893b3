"""The `dataset` task: the user's own data, from a local file or folder or the Hugging Face hub.

    data:
      task: dataset
      options: {path: my_data.jsonl, test_path: my_test.jsonl, scorer: exact}

Sources: `path` (a `.jsonl` / `.json` / `.parquet` / `.csv` file, or a folder written by `Dataset.save_to_disk` /
`DatasetDict.save_to_disk`, whose `split` is read) or `hub_id` (`datasets.load_dataset(hub_id, config, split=,
streaming=, revision=)`). The test split (what `mdm eval` scores) comes from `test_path` or `test_split`.

Rows are prompt/response columns (`prompt_key`, `response_key`) or chat `messages` (`messages_key`: a list of
{role, content}; the last assistant message is the response, the turns before it the prompt); `format: auto`
picks whichever columns the data has. `prompt_template` joins columns into the prompt (Alpaca:
`"{instruction}\n{input}"`; surrounding whitespace removed, so an empty input leaves no trailing newline); a data
set with an `instruction` column that the prompt would leave out is refused. The scorer, the ISAD `delimiters` and
the SyRM `syntax_patterns` are options too, so this task's TaskSpec is built from its options (`dataset_spec`).

Rows with a null (or NaN) or empty (whitespace only) response, or a null prompt, are dropped and counted (the
counts are in the loaded list's `notes`, printed by `mdm train`); a source where they are more than half the rows,
or all of them, is refused: most likely the wrong column.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import string
from pathlib import Path

from mdm.data.tasks import BOXED_DELIMITERS, GSM8K_DELIMITERS, TaskSpec, closing_brace, find_all
from mdm.errors import ConfigError

SOURCE_OPTIONS = ("path", "hub_id", "config", "split", "streaming", "revision", "test_path", "test_split")
COLUMN_OPTIONS = ("format", "prompt_key", "prompt_template", "response_key", "messages_key", "answer_key")
SPEC_OPTIONS = ("scorer", "delimiters", "syntax_patterns")
OPTIONS = SOURCE_OPTIONS + COLUMN_OPTIONS + SPEC_OPTIONS
SCORERS = ("exact", "gsm8k", "boxed", "hitab", "none")
FORMATS = ("auto", "prompt_response", "messages")
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")


def _where(key: str) -> str:
    return f"data.options.{key}"


def check_options(options: dict) -> dict:
    """The options with their defaults; an unknown key or a bad value is a ConfigError naming it."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(_where(unknown[0]), f"unknown option of task 'dataset'; allowed: {', '.join(OPTIONS)}")
    o = {"split": "train", "streaming": False, "format": "auto", "prompt_key": "prompt", "response_key": "response",
         "messages_key": "messages", "scorer": "exact"} | dict(options)
    if o["scorer"] not in SCORERS:
        raise ConfigError(_where("scorer"), f"unknown scorer {o['scorer']!r}; allowed: {', '.join(SCORERS)}")
    if o["format"] not in FORMATS:
        raise ConfigError(_where("format"), f"unknown format {o['format']!r}; allowed: {', '.join(FORMATS)}")
    for key in ("delimiters", "syntax_patterns"):
        value = o.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)):
            raise ConfigError(_where(key), f"must be a list of non-empty strings, got {value!r}")
    for key in ("path", "hub_id", "config", "split", "revision", "test_path", "test_split", "prompt_key",
                "prompt_template", "response_key", "messages_key", "answer_key"):
        if o.get(key) is not None and not isinstance(o[key], str):
            raise ConfigError(_where(key), f"must be a string, got {o[key]!r}")
    if o.get("prompt_template") is not None:
        template_fields(o["prompt_template"])
    if not isinstance(o["streaming"], bool):
        raise ConfigError(_where("streaming"), f"must be true or false, got {o['streaming']!r}")
    return o


def template_fields(template: str) -> list[str]:
    """The column names of a prompt template (`"{instruction}\\n{input}"`); a malformed one is a ConfigError."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ConfigError(_where("prompt_template"), f"{template!r}: {e} (columns in braces, e.g. "
                          '"{instruction}\\n{input}"; a literal brace is {{ or }})') from None
    bad = [f for f in fields if not f or any(c in f for c in ".[]!:")]
    if bad or not fields:
        raise ConfigError(_where("prompt_template"), f"{template!r}: needs plain column names in braces, e.g. "
                          '"{instruction}\\n{input}"')
    return list(dict.fromkeys(fields))


def dataset_spec(options: dict):
    """The TaskSpec of a `dataset` run: its scorer and its delimiter / syntax lists (default: the scorer's)."""
    o = check_options(options)
    default = {"gsm8k": GSM8K_DELIMITERS, "boxed": BOXED_DELIMITERS, "hitab": BOXED_DELIMITERS}.get(o["scorer"], ())
    delimiters = tuple(o["delimiters"]) if o.get("delimiters") is not None else default
    return TaskSpec("dataset", ("train", "test"), delimiters, tuple(o.get("syntax_patterns") or ()), o["scorer"])


# ---------------------------------------------------------------- reading a source


def _read_file(path: Path):
    if path.suffix == ".csv":
        import datasets  # deferred: datasets (slow import), only for a .csv file

        datasets.disable_progress_bars()  # "Generating train split" on stderr
        try:  # every column as text ("72" stays "72", not 72.0 beside an empty cell; "NA" stays "NA")
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header, first = next(reader, []), next(reader, None)
            if first is None:
                return []  # a header at most: "no rows"
            features = datasets.Features({name: datasets.Value("string") for name in header})
            return datasets.load_dataset("csv", data_files=str(path), split="train", features=features,
                                         keep_default_na=False)
        except Exception as e:  # noqa: BLE001  (pandas / arrow raise several types for a bad file)
            raise ConfigError(str(path), f"not a readable CSV file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # deferred: pyarrow, only for a .parquet file

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001  (pyarrow raises several types for a bad file)
            raise ConfigError(str(path), f"not a readable parquet file ({type(e).__name__}: {e})") from None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError:
            rows = None  # JSON lines in a .json file
        if rows is not None:
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ConfigError(str(path), "a .json file must hold a list of objects (or one object per line)")
            return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{lineno}", f"not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{lineno}", f"expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_folder(path: Path, split: str, key: str):
    import datasets  # deferred: datasets (slow import), only for a saved datasets folder

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(path), f"not a folder written by Dataset.save_to_disk ({str(e).splitlines()[0]})") \
            from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ConfigError(_where(key), f"{path} has no split {split!r}; it has: {', '.join(data)}")
        return data[split]
    return data


def _read_path(path_text: str, split: str | None, key: str, split_key: str):
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ConfigError(_where(key), f"{path}: no such file or folder (a .jsonl, .json, .parquet or .csv file, or a "
                          "save_to_disk folder)")
    if path.is_dir():
        return _read_folder(path, split or "train", split_key)
    if path.suffix not in FILE_TYPES:
        raise ConfigError(_where(key), f"{path}: unsupported file type {path.suffix!r}; allowed: "
                          f"{', '.join(FILE_TYPES)} or a save_to_disk folder")
    if split not in (None, "train"):
        raise ConfigError(_where(split_key), f"{path} is one file with no splits; use test_path for a test file")
    return _read_file(path)


def _read_hub(o: dict, split: str, key: str):
    import datasets  # deferred: datasets (slow import), only for a hub dataset

    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return datasets.load_dataset(o["hub_id"], o.get("config"), split=split, streaming=o["streaming"],
                                     revision=o.get("revision"))
    except ValueError as e:
        if "split" in str(e).lower() and "offline" not in str(e).lower():
            raise ConfigError(_where(key), f"hub dataset {o['hub_id']!r}: no split {split!r} "
                              f"({str(e).splitlines()[0]})") from None
        raise ConfigError(_where("hub_id"), _hub_problem(o["hub_id"], e, offline)) from None
    except Exception as e:  # noqa: BLE001  (connection, missing repo, gated, missing cache while offline)
        raise ConfigError(_where("hub_id"), _hub_problem(o["hub_id"], e, offline)) from None


def _hub_problem(hub_id: str, e: Exception, offline: bool) -> str:
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    if offline:
        return (f"cannot load hub dataset {hub_id!r} offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set and it is "
                f"not in the local cache: {why}); download it once online, or save it and give path")
    return f"cannot load hub dataset {hub_id!r}: {why}"


def _columns(rows) -> list[str]:
    names = getattr(rows, "column_names", None)
    if names is not None:
        return list(names)
    if isinstance(rows, list):
        return list(dict.fromkeys(k for r in rows[:100] for k in r))  # in the file's order
    return []


def read_rows(o: dict, split: str):
    """The raw rows (a list, a `datasets.Dataset` or an iterable one) of the train or test split."""
    if split == "train":
        if o.get("path") and o.get("hub_id"):
            raise ConfigError(_where("hub_id"), "give either path or hub_id, not both")
        if o.get("path"):
            return _read_path(o["path"], o["split"], "path", "split"), o["path"]
        if o.get("hub_id"):
            return _read_hub(o, o["split"], "split"), o["hub_id"]
        raise ConfigError("data.options", "task 'dataset' needs a source: path (a .jsonl/.json/.parquet/.csv file or a "
                          "save_to_disk folder) or hub_id (a Hugging Face datasets id)")
    if o.get("test_path"):
        return _read_path(o["test_path"], o.get("test_split"), "test_path", "test_split"), o["test_path"]
    if o.get("test_split"):
        if o.get("path"):
            return _read_path(o["path"], o["test_split"], "path", "test_split"), f"{o['path']}[{o['test_split']}]"
        if o.get("hub_id"):
            return _read_hub(o, o["test_split"], "test_split"), f"{o['hub_id']}[{o['test_split']}]"
    raise ConfigError("data.options.test_path", "no test source for accuracy: give test_path (a file or folder) or "
                      "test_split (a split of path / hub_id), or use scorer: none (held-out ELBO only)")


def check_source(options: dict, accuracy: bool = False) -> None:
    """Cheap checks before any compute: the options, a source given, local files present, and a test source
    when accuracy is asked (`accuracy`: the run's eval.accuracy is set and the scorer is not none)."""
    o = check_options(options)
    if o.get("path") and o.get("hub_id"):
        raise ConfigError(_where("hub_id"), "give either path or hub_id, not both")
    if not o.get("path") and not o.get("hub_id"):
        read_rows(o, "train")  # the "needs a source" error
    for key in ("path", "test_path"):
        if o.get(key) and not Path(o[key]).expanduser().exists():
            raise ConfigError(_where(key), f"{o[key]}: no such file or folder (a .jsonl, .json, .parquet or .csv file, "
                              "or a save_to_disk folder)")
    if accuracy and o["scorer"] != "none" and not o.get("test_path") and not o.get("test_split"):
        raise ConfigError(_where("test_path"), "eval.accuracy is set but there is no test source: give test_path (a "
                          "file or folder) or test_split (a split of path / hub_id), or use scorer: none")


def absolute_paths(options: dict) -> dict:
    """`path` / `test_path` made absolute (relative to the working directory), so that a run's record names its
    data wherever `mdm eval` or `mdm generate` is started later."""
    return {k: os.path.abspath(os.path.expanduser(v)) if k in ("path", "test_path") and isinstance(v, str) else v
            for k, v in options.items()}


# ---------------------------------------------------------------- rows -> examples


def _format(o: dict, columns: list[str], source: str) -> str:
    if o["format"] != "auto":
        return o["format"]
    if o["messages_key"] in columns and not o.get("prompt_template"):
        return "messages"
    if o.get("prompt_template") and o["response_key"] in columns:
        return "prompt_response"
    if o["prompt_key"] in columns and o["response_key"] in columns:
        return "prompt_response"
    raise ConfigError(_where("format"), f"{source}: neither a {o['messages_key']!r} column nor "
                      f"{o['prompt_key']!r} + {o['response_key']!r} columns; it has: {', '.join(columns) or 'none'} "
                      "(set messages_key, or prompt_key and response_key)")


def _require(o: dict, fmt: str, columns: list[str], source: str) -> None:
    template = o.get("prompt_template") if fmt == "prompt_response" else None
    keys = ["messages_key"] if fmt == "messages" else ["response_key"] if template else ["prompt_key", "response_key"]
    if o.get("answer_key"):
        keys.append("answer_key")
    for key in keys:
        if o[key] not in columns:
            raise ConfigError(_where(key), f"{source}: no column {o[key]!r}; it has: {', '.join(columns)}")
    for field in template_fields(template) if template else []:
        if field not in columns:
            raise ConfigError(_where("prompt_template"), f"{source}: no column {field!r}; it has: "
                              f"{', '.join(columns)}")
    if fmt == "prompt_response" and not template and "instruction" in columns and \
            "instruction" not in (o["prompt_key"], o["response_key"], o.get("answer_key")):
        raise ConfigError(_where("prompt_key"), f"{source}: the prompt ({o['prompt_key']!r}) would leave out the "
                          "'instruction' column (Alpaca: the task is in instruction, its argument in input); join "
                          'them with prompt_template: "{instruction}\\n{input}" (or prompt_template: '
                          f'"{{{o["prompt_key"]}}}" to use {o["prompt_key"]!r} alone)')


def split_messages(messages, where: str) -> tuple[list[dict], str]:
    """(the turns before the last assistant message, that message's text)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in messages):
        raise ConfigError(where, "messages must be a list of {role, content} objects")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ConfigError(where, "no assistant message (the last one is the response)")
    if last == 0:
        raise ConfigError(where, "no turn before the assistant message (the prompt)")
    return [{"role": m["role"], "content": str(m["content"])} for m in messages[:last]], \
        "" if is_null(messages[last]["content"]) else str(messages[last]["content"])


def boxed_answers(text: str) -> list[str]:
    out = []
    for _, e in find_all(text, [BOXED_DELIMITERS[0]]):
        j = closing_brace(text, e - 1)
        if j is not None:
            out.append(text[e:j])
    return out


def is_null(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # JSON null, arrow null, pandas NaN


class Examples(list):
    """The loaded examples; `notes`: what was dropped and why (one line each), for the caller to print."""

    notes: list[str] = []


def to_example(row: dict, i: int, fmt: str, o: dict, split: str, source: str) -> dict | str:
    """The example of a row, or why it is dropped ("null response", "empty response", "null prompt")."""
    keys = [o["messages_key"]] if fmt == "messages" else [o["response_key"]] if o.get("prompt_template") else \
        [o["prompt_key"], o["response_key"]]
    if fmt != "messages" and o.get("prompt_template"):
        keys += template_fields(o["prompt_template"])
    missing = [k for k in keys + ([o["answer_key"]] if o.get("answer_key") else []) if k not in row]
    if missing:
        raise ConfigError(f"{source}: row {i + 1}", f"no {missing[0]!r}; it has: {', '.join(row)}")
    if fmt == "messages":
        raw = row[o["messages_key"]]
        if isinstance(raw, list) and any(isinstance(m, dict) and m.get("role") != "assistant" and "content" in m
                                         and is_null(m["content"]) for m in raw):
            return "null prompt"  # a turn's null content would become the text "None"
        turns, response = split_messages(raw, f"{source}: row {i + 1}")
        ex = {"prompt": "\n".join(m["content"] for m in turns), "messages": turns, "response": response}
    else:
        if o.get("prompt_template"):
            fields = template_fields(o["prompt_template"])
            if all(is_null(row[f]) for f in fields):
                return "null prompt"
            prompt = o["prompt_template"].format_map({f: "" if is_null(row[f]) else str(row[f]) for f in fields})
            prompt = prompt.strip()
        elif is_null(row[o["prompt_key"]]):
            return "null prompt"
        else:
            prompt = str(row[o["prompt_key"]])
        if is_null(row[o["response_key"]]):
            return "null response"
        ex = {"prompt": prompt, "response": str(row[o["response_key"]])}
    if not ex["response"].strip():
        return "empty response"
    if o.get("answer_key"):
        answer = row[o["answer_key"]]
    elif o["scorer"] == "hitab":  # HiTab's gold is the list of boxed answers
        answer = boxed_answers(ex["response"]) or [ex["response"]]
    else:
        answer = ex["response"]
    return ex | {"answer": answer, "task": "dataset", "id": f"dataset-{split}-{i}"}


def load_dataset_task(split: str, n: int | None = None, /, **options) -> list[dict]:
    """The first `n` examples (all when None) of the train or test source."""
    o = check_options(options)
    rows, source = read_rows(o, split)
    columns = _columns(rows)
    fmt = _format(o, columns, source) if columns else o["format"]
    if columns:
        _require(o, fmt, columns, source)
    out, dropped = Examples(), {}
    for i, row in enumerate(rows):
        if n is not None and len(out) >= n:
            break
        if fmt == "auto":  # a streamed dataset without column names: decide on the first row
            fmt = _format(o, list(row), source)
            _require(o, fmt, list(row), source)
        ex = to_example(row, i, fmt, o, split, source)
        if isinstance(ex, str):
            dropped[ex] = dropped.get(ex, 0) + 1
        else:
            out.append(ex)
    n_dropped = sum(dropped.values())
    seen, what = len(out) + n_dropped, ", ".join(f"{k} ({v})" for k, v in dropped.items())
    column = o["messages_key"] if fmt == "messages" else o["response_key"]
    key = ("test_path" if o.get("test_path") else "test_split") if split == "test" else \
        ("path" if o.get("path") else "hub_id")
    if not out and not dropped:
        raise ConfigError(_where(key), f"{source}: no rows")
    if not out:
        raise ConfigError(_where(key), f"{source}: all {seen} rows have a null or empty response or prompt "
                          f"({what}; response column {column!r}): nothing to train or score on")
    if 2 * n_dropped > seen:
        raise ConfigError(_where(key), f"{source}: {n_dropped} of {seen} rows have a null or empty response or "
                          f"prompt ({what}; response column {column!r}); check the column, or remove those rows")
    if dropped:
        out.notes = [f"{source}: dropped {n_dropped} of {seen} rows: {what} (the rule: a row with a null or empty "
                     "response, or a null prompt, is dropped)"]
    return out


def fingerprint(options: dict) -> str:
    """What the training data of a run is, beyond its options (the content of `path`: a file, or a folder's files;
    a hub source is named by hub_id + revision): a base model trained on it is cached under this, so an edited
    file gets a new base. Files over 256 MiB are named by size and modification time instead of content."""
    o = check_options(options)
    h = hashlib.sha256()
    if o.get("path"):
        path = Path(o["path"]).expanduser()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in (f for f in files if f.is_file()):
            size = p.stat().st_size
            h.update(f"{p.relative_to(path) if path.is_dir() else p.name}\0{size}\0".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest() if size < 1 << 28 else str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]
