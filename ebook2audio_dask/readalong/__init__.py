"""Read-along books: EPUB 3 with Media Overlays timed from the conversion's own audio.

:mod:`.sentences` lists the sentences a plan speaks (cut as the subtitles cut
them) and holds their timings; :mod:`.overlays` wraps them in the book's
own content documents and writes the SMIL overlays and the EPUB 3;
:mod:`.generate` writes a plain EPUB 3 for books that are not EPUBs.
"""

from .generate import generate_epub
from .overlays import ChapterText, ReadAlongStats, write_readalong
from .sentences import AudioFile, SpokenSentence, TimedSentence, spoken_sentences

__all__ = [
    "AudioFile",
    "ChapterText",
    "ReadAlongStats",
    "SpokenSentence",
    "TimedSentence",
    "generate_epub",
    "spoken_sentences",
    "write_readalong",
]
