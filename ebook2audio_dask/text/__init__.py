"""The *chunk* stage: normalisation, sentence splitting, content-keyed chunks."""

from .chunk import BookPlan, ChapterPlan, Chunk, Pauses, content_key, plan_book
from .normalize import normalize_text
from .segment import split_long, split_sentences

__all__ = [
    "BookPlan",
    "ChapterPlan",
    "Chunk",
    "Pauses",
    "content_key",
    "normalize_text",
    "plan_book",
    "split_long",
    "split_sentences",
]
