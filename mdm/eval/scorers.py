"""Answer scorers, exactly as PAPER.md "Scoring" prescribes.

Pure functions: an empty or unparsable prediction is scored wrong, never raises.

GSM8K
  gsm8k_authors   the authors' rule: first `####\\s*([-+]?\\d+)` in prediction and gold, string equality.
                  (Faithful quirk: a gold "#### 2,125" extracts "2", so a prediction "#### 2..." matches.)
  gsm8k_strict    lm-eval-harness gsm8k "strict-match" filter + exact_match metric.
  gsm8k_flexible  lm-eval-harness gsm8k "flexible-extract" filter + exact_match metric.
  `gold` may be the full GSM8K answer text (ending in "#### <n>") or the bare final number.

HiTab (loose multi-answer matching)
  Every balanced `\\boxed{...}` in the prediction is one predicted answer; gold is a list (a single string
  is split on commas). Pairs match if both parse as numbers within 1e-2, else if equal as strings; the
  matching is one-to-one and greedy (each prediction, in order, takes the first unmatched gold answer).
  Decision on thousands separators: "1,234" parses as the number 1234, and splitting a single gold string
  on commas does not split at a thousands separator (digit, comma, exactly three digits). The authors'
  script would score "1,234" against "1234" as a miss; we count it as a match.

OpenScience
  boxed_match: last `\\boxed{...}` of prediction and gold, equal after stripping whitespace.

Your own data (task `dataset`, scorer `exact`)
  exact_match: the whole response equals the gold (answer column, else the reference response), whitespace
  trimmed and collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# ---------------------------------------------------------------- GSM8K

_AUTHORS_RE = re.compile(r"####\s*([-+]?\d+)")
_BARE_INT_RE = re.compile(r"\s*([-+]?\d+)")  # a bare gold number, read like the regex would

# lm-eval-harness lm_eval/tasks/gsm8k/gsm8k.yaml (version 3.0)
LM_EVAL_STRICT_RE = r"#### (\-?[0-9\.\,]+)"
LM_EVAL_FLEXIBLE_RE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LM_EVAL_FALLBACK = "[invalid]"
LM_EVAL_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]  # exact_match regexes_to_ignore; ignore_case: true


def _text(x) -> str:
    return x if isinstance(x, str) else ""


def gsm8k_authors(pred: str, gold: str) -> bool:
    p = _AUTHORS_RE.search(_text(pred))
    gold = _text(gold)
    g = _AUTHORS_RE.search(gold) or _BARE_INT_RE.match(gold)
    return p is not None and g is not None and p.group(1) == g.group(1)


def _lm_eval_extract(resp: str, pattern: str, group_select: int) -> str:
    """lm-eval's RegexFilter.apply for one response (then take_first)."""
    matches = re.findall(pattern, _text(resp))
    if not matches:
        return LM_EVAL_FALLBACK
    m = matches[group_select]
    if isinstance(m, tuple):
        m = next((g for g in m if g), LM_EVAL_FALLBACK)
    return m.strip()


def _lm_eval_exact_match(pred: str, ref: str) -> bool:
    """lm-eval's exact_match (hf-evaluate port) with the gsm8k yaml settings, for one pair."""
    for pattern in LM_EVAL_IGNORE:
        pred, ref = re.sub(pattern, "", pred), re.sub(pattern, "", ref)
    return pred.lower() == ref.lower()


def gsm8k_strict(pred: str, gold: str) -> bool:
    return _lm_eval_exact_match(_lm_eval_extract(pred, LM_EVAL_STRICT_RE, 0), _text(gold))


def gsm8k_flexible(pred: str, gold: str) -> bool:
    return _lm_eval_exact_match(_lm_eval_extract(pred, LM_EVAL_FLEXIBLE_RE, -1), _text(gold))


# ---------------------------------------------------------------- \boxed{} extraction

_BOXED = "\\boxed{"


def extract_boxed(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` with balanced braces, in order; an unclosed box is ignored."""
    text, out, i = _text(text), [], 0
    while (start := text.find(_BOXED, i)) != -1:
        depth, j = 1, start + len(_BOXED)
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            break
        out.append(text[start + len(_BOXED) : j - 1])
        i = j
    return out


def last_boxed(text: str) -> str | None:
    boxes = extract_boxed(text)
    return boxes[-1] if boxes else None


# ---------------------------------------------------------------- HiTab

_TEXT_RE = re.compile(r"\\text\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")
_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_GOLD_SPLIT_RE = re.compile(r"(?<!\d),|,(?!\d{3}(?!\d))")  # a comma, unless a thousands separator
TOLERANCE = 1e-2


def _clean(ans: str) -> str:
    """Extraction clean-up: `\\text{x}` -> x, `\\%` -> %, drop backslashes and trailing periods."""
    prev = None
    while prev != ans:
        prev, ans = ans, _TEXT_RE.sub(r"\1", ans)
    return ans.replace("\\%", "%").replace("\\", "").strip().rstrip(".").strip()


def _normalise(ans: str) -> str:
    return _clean(ans).replace("frac{", "").replace("}", "").replace("%", "").strip().lower()


def _as_number(s: str) -> float | None:
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    return float(s) if _NUMBER_RE.fullmatch(s) else None


def hitab_match(pred: str, gold: str) -> bool:
    p, g = _normalise(str(pred)), _normalise(str(gold))
    pn, gn = _as_number(p), _as_number(g)
    if pn is not None and gn is not None:
        return abs(pn - gn) < TOLERANCE
    return p == g


def hitab_gold_list(gold) -> list[str]:
    if isinstance(gold, str):
        gold = [gold]
    gold = [str(g) for g in gold]
    if len(gold) == 1 and "," in gold[0]:
        gold = [g.strip() for g in _GOLD_SPLIT_RE.split(gold[0])]
    return gold


def _prf(correct: int, n_gold: int, n_pred: int) -> dict:
    acc = correct / n_gold if n_gold else 0.0
    prec = correct / n_pred if n_pred else 0.0
    f1 = 2 * acc * prec / (acc + prec) if acc + prec else 0.0
    return {
        "correct": correct,
        "n_gold": n_gold,
        "n_pred": n_pred,
        "accuracy": acc,
        "precision": prec,
        "f1": f1,
    }


def hitab_score(pred: str, gold: str | Sequence) -> dict:
    """One item: dict(correct, n_gold, n_pred, accuracy, precision, f1)."""
    preds = [_clean(b) for b in extract_boxed(pred)]
    golds = hitab_gold_list(gold)
    used = [False] * len(golds)
    correct = 0
    for p in preds:
        for j, g in enumerate(golds):
            if not used[j] and hitab_match(p, g):
                used[j] = True
                correct += 1
                break
    return _prf(correct, len(golds), len(preds))


def hitab_aggregate(scores: Iterable[dict]) -> dict:
    """Micro average over items: accuracy = matched / all gold answers, precision = matched / predicted."""
    scores = list(scores)
    return _prf(*(sum(s[k] for s in scores) for k in ("correct", "n_gold", "n_pred")))


# ---------------------------------------------------------------- OpenScience


def boxed_match(pred: str, gold: str) -> bool:
    p, g = last_boxed(pred), last_boxed(gold)
    return p is not None and g is not None and p.strip() == g.strip()


# ---------------------------------------------------------------- your own data (task `dataset`, scorer exact)


def exact_match(pred: str, gold) -> bool:
    """The whole decoded response equals the gold text, after trimming and collapsing whitespace."""
    return " ".join(str(pred).split()) == " ".join(str(gold).split())


def paper_count(spec, n: int) -> dict:
    """Where the paper scored another number of test items than we do (HiTab: 1,412 of the 1,584, by a rule it
    does not state), both counts and a note go into the record, for the report to show beside the paper's number."""
    if spec.paper_eval_n is None or spec.paper_eval_n == n:
        return {}
    return {"paper_n": spec.paper_eval_n,
            "paper_n_note": f"the paper scored {spec.paper_eval_n:,} {spec.name} test items (selection rule not "
                            f"stated, PAPER.md); these scores are over {n:,}, so the two are not on the same items"}
