"""Text formats the tasks share: answer delimiters and SyRM syntax patterns, spans on decoded text (`\\boxed{}` with its
closing brace), and HiTab's HTML table layout (used by the generated `tables` task and by the HiTab loader)."""

from __future__ import annotations

import html
from collections.abc import Iterable

Span = tuple[int, int]

GSM8K_DELIMITERS = ("####",)
BOXED_DELIMITERS = ("\\boxed{", "}")  # "}" = only the brace that closes the box
HTML_TAGS = ("table", "thead", "tbody", "tr", "th", "td")
HTML_SYNTAX = tuple(f"<{t}>" for t in HTML_TAGS) + tuple(f"</{t}>" for t in HTML_TAGS) + ("</", "<", ">")
TABLE_INSTRUCTION = "Answer the question about the table. Put the final answer in \\boxed{}."


# ---------------------------------------------------------------- spans on decoded text


def find_all(text: str, patterns: Iterable[str]) -> list[Span]:
    """Character spans of every (possibly overlapping) occurrence of every pattern."""
    spans = []
    for pat in patterns:
        i = text.find(pat)
        while pat and i != -1:
            spans.append((i, i + len(pat)))
            i = text.find(pat, i + 1)
    return sorted(spans)


def closing_brace(text: str, open_index: int) -> int | None:
    """Index of the "}" matching the "{" at open_index, or None when it is never closed."""
    depth = 0
    for j in range(open_index, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return None


def boxed_spans(text: str) -> list[Span]:
    """Each `\\boxed{` and the `}` that closes it (not the braces inside the answer)."""
    spans = []
    for s, e in find_all(text, [BOXED_DELIMITERS[0]]):
        spans.append((s, e))
        j = closing_brace(text, e - 1)
        if j is not None:
            spans.append((j, j + 1))
    return sorted(spans)


def last_boxed(text: str) -> str | None:
    spans = find_all(text, [BOXED_DELIMITERS[0]])
    for _, e in reversed(spans):
        j = closing_brace(text, e - 1)
        if j is not None:
            return text[e:j]
    return None


# ---------------------------------------------------------------- HTML tables (HiTab layout)


def render_table_html(table: dict, cell_space: bool = False) -> str:
    """HiTab table JSON -> HTML: header rows in <thead> with <th>, left header columns as <th>, merged
    regions as rowspan/colspan (a region crossing the thead/tbody boundary is cut at it). `cell_space`: a space
    before each cell's text, so a word-level BPE gives a cell the tokens the question and answer use (` 6`)."""
    texts, top, left = table["texts"], table["top_header_rows_num"], table["left_header_columns_num"]
    spans, covered = {}, set()
    for reg in table.get("merged_regions") or []:
        r0, r1, c0, c1 = reg["first_row"], reg["last_row"], reg["first_column"], reg["last_column"]
        if r0 < top <= r1:
            r1 = top - 1
        spans[(r0, c0)] = (r1 - r0 + 1, c1 - c0 + 1)
        covered |= {(i, j) for i in range(r0, r1 + 1) for j in range(c0, c1 + 1)} - {(r0, c0)}
    rows = []
    for i, row in enumerate(texts):
        cells = []
        for j, cell in enumerate(row):
            if (i, j) in covered:
                continue
            tag = "th" if i < top or j < left else "td"
            rs, cs = spans.get((i, j), (1, 1))
            attrs = (f' rowspan="{rs}"' if rs > 1 else "") + (f' colspan="{cs}"' if cs > 1 else "")
            text = html.escape("" if cell is None else str(cell), quote=False)
            text = " " + text if cell_space and text else text
            cells.append(f"<{tag}{attrs}>{text}</{tag}>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = f"<thead>{''.join(rows[:top])}</thead>" if top else ""
    return f"<table>{head}<tbody>{''.join(rows[top:])}</tbody></table>"


def table_prompt(table_html: str, question: str, instruction: str = "", title: str = "") -> str:
    """Optional title line, HTML table, optional instruction, question. The generated task leaves the
    instruction out to keep prompts short (a tiny model learns the answer format from its training data)."""
    lines = [title, table_html, instruction, f"Question: {question}"]
    return "\n".join(line for line in lines if line)
