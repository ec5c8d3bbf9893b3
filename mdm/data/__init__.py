"""Data layer: tasks (generated and real), the tiny tokenizer, chat formatting and collation into MDMBatch.

Imports are lazy, so that the task registry (`mdm.data.tasks`) is read without importing torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Collator": "collate", "format_chat": "collate", "mark_spans": "collate", "tokenize_examples": "collate",
    "TASKS": "tasks", "TaskSpec": "tasks", "get_task": "tasks", "is_text_to_image": "tasks", "make_task": "tasks",
    "build_tokenizer": "tokenizer", "mask_token_id_of": "tokenizer",
}  # fmt: skip
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"mdm.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mdm.data' has no attribute {name!r}")
