"""Data layer: tasks (generated and real), the tiny tokenizer, chat formatting and collation into MDMBatch.

Imports are lazy, so that the task registry (`mdm.data.tasks`) is read without importing torch.
"""

from __future__ import annotations

from mdm.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Collator": "collate", "format_chat": "collate", "mark_spans": "collate", "tokenize_examples": "collate",
    "TASKS": "tasks", "TaskSpec": "tasks", "get_task": "tasks", "make_task": "tasks",
    "build_tokenizer": "tokenizer", "mask_token_id_of": "tokenizer",
})  # fmt: skip
