"""Data layer: tasks (generated and real), the tiny tokenizer, chat formatting and collation into MDMBatch."""

from mdm.data.collate import Collator, format_chat, mark_spans, tokenize_examples
from mdm.data.tasks import TASKS, TaskSpec, get_task, is_text_to_image, make_task
from mdm.data.tokenizer import build_tokenizer, mask_token_id_of

__all__ = [
    "TASKS",
    "Collator",
    "TaskSpec",
    "build_tokenizer",
    "format_chat",
    "get_task",
    "is_text_to_image",
    "make_task",
    "mark_spans",
    "mask_token_id_of",
    "tokenize_examples",
]
