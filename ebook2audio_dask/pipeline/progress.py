"""Progress bars: one for all the chunks, one per book in flight (tqdm; in Jupyter, widgets)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressBars"]


class ProgressBars:
    """Chunk progress of a run: a total bar and a bar per book until it is done.

    Used by ``ebook2audio convert`` (on stderr) and by ``convert(progress=True)``
    (``tqdm.auto``: notebook widgets in Jupyter).  Its methods are the
    callbacks of :func:`~ebook2audio_dask.pipeline.graph.run_jobs`.

    Parameters
    ----------
    notebook : bool
        Use ``tqdm.auto`` (widgets in Jupyter) instead of terminal bars.
    per_book : bool
        Show a bar per book as well as the total one.
    file
        Stream of terminal bars (default stderr).
    disable : bool, optional
        ``None`` (default): no bars when *file* is not a terminal.
    """

    def __init__(
        self,
        *,
        notebook: bool = False,
        per_book: bool = True,
        file: Any = None,
        disable: bool | None = None,
    ):
        if notebook:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self._tqdm = tqdm
        self._file = file or sys.stderr
        self._per_book = per_book
        self._position = 1
        self._disable = disable
        self.total = tqdm(total=0, unit="chunk", desc="all books", file=self._file, disable=disable,
                          dynamic_ncols=True, position=0)  # fmt: skip
        self.books: dict[int, Any] = {}

    def book_total(self, job, n: int) -> None:
        """A book's plan arrived: *n* chunks to go (cached ones come next)."""
        self.total.total += n
        self.total.refresh()
        if self._per_book:
            name = job.stem if len(job.stem) <= 32 else job.stem[:31] + "…"
            self.books[id(job)] = self._tqdm(
                total=n,
                unit="chunk",
                desc=name,
                file=self._file,
                disable=self._disable,
                dynamic_ncols=True,
                position=self._position,
                leave=False,
            )
            self._position += 1

    def book_chunks(self, job, n: int) -> None:
        """*n* more chunks of *job* are in the store."""
        self.total.update(n)
        bar = self.books.get(id(job))
        if bar is not None:
            bar.update(n)

    def book_done(self, job) -> None:
        bar = self.books.pop(id(job), None)
        if bar is not None:
            bar.close()

    def write(self, line: str, *, err: bool = False) -> None:
        """Print a line without breaking the bars."""
        self.total.write(line, file=sys.stderr if err else sys.stdout)

    def close(self) -> None:
        for bar in self.books.values():
            bar.close()
        self.books.clear()
        self.total.close()
