"""The merge stage: a book's chunks, read from the chunk store, become its audio file(s).

:func:`merge_task` is what Dask runs; a small class does it step by step:
lengths and dead letters from the synthesize tasks' results, the PCM
streamed into the encoder(s) (or the book's kept encoded audio reused), each
file finished with its chapters, tags, cover and subtitles, and staged for
the client to publish.  Where things land in the book (timeline, parts,
chapter marks, cues, names) is :mod:`~ebook2audio_dask.pipeline.layout`'s;
the dead-letter file :mod:`~ebook2audio_dask.pipeline.deadletters`'; the
task's view of Dask :mod:`~ebook2audio_dask.pipeline.coordination`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import config
from ..audio import (
    WAV_HEADER_BYTES,
    BookTags,
    ChapterMark,
    FinalFile,
    OutputSpec,
    PartEncoder,
    decode_wav,
    finish_file,
    format_subtitles,
    normalize_part,
)
from ..errors import BookError, Ebook2AudioError
from ..logs import get_logger
from ..storage import ChunkStore
from ..storage.fs import Publication
from ..text.chunk import BookPlan
from .coordination import merge_cancelled, scratch_dir
from .deadletters import DeadLetters
from .layout import (
    Part,
    PartCuts,
    output_names,
    part_cues,
    part_marks,
    timeline,
    with_suffix,
)
from .metrics import digest
from .results import BatchResult, ChapterResult, LostBatch, MergeResult, PreparedCover

__all__ = ["READ_WINDOW", "encoded_audio_key", "merge_task"]

logger = get_logger(__name__)

#: Chunks the merge reads from the store in one (concurrent) request.
READ_WINDOW = 64


def merge_task(
    plan: BookPlan,
    cover: PreparedCover | None,
    batches: tuple[BatchResult | None, ...],
    chunk_batch: dict[str, int],
    store: ChunkStore,
    output_url: str,
    storage_options: dict[str, Any] | None = None,
    bitrate: str | None = None,
    chunk_sizes: dict[str, int] | None = None,
    stop_event: str | None = None,
    *,
    lost: dict[int, LostBatch] | None = None,
    allow_gaps: bool = False,
    failures_url: str | None = None,
    output_spec: OutputSpec | None = None,
    readalong: dict[str, Any] | None = None,
) -> MergeResult:
    """Merge stage: chunks + pauses → the book's tagged, chaptered audio file(s) at *output_url*.

    The merge runs once the book's synthesize tasks are done: *batches* are
    their results (Dask hands them over as the task's dependencies, so the
    merge neither occupies a worker nor asks the scheduler anything while
    they run); ``chunk_batch[key]`` says which batch made each chunk, and
    chunks not listed were already in the store (*chunk_sizes* holds their
    sizes, from the client's per-key lookup).  *lost* maps the index of a
    batch Dask gave up on (KilledWorker; ``None`` in *batches*) to why.

    Every chunk's length is then known before anything is read, so the
    chapter times are too: an unsplit book without loudness normalisation is
    encoded in **one** ffmpeg pass that also writes the tags, chapters and
    cover; a split book and ``loudnorm`` (two passes by nature) stream into
    one encoder per file and add the chapters in a fast second pass.  The
    PCM is read from the store in windows and streamed; memory does not grow
    with the book.  The files are only *staged* (at temporary names beside
    their final ones, :class:`~ebook2audio_dask.storage.fs.Publication`):
    the client publishes them together with the book's report, all or
    nothing.

    *output_spec* (:class:`~ebook2audio_dask.audio.formats.OutputSpec`, M4B by
    default) chooses the format, the split (one file per chapter, or parts of
    at most N hours: cut at a chunk's end, at a chapter's start when one is
    close), the ``loudnorm`` filter and the subtitles (cues from the same
    real chunk lengths).  *output_url* is the unsplit file's URL; split files
    are named after it (``<stem>/<NN> - <title>.<ext>``, ``<stem> - Part i of n.<ext>``).

    Chunks that could not be synthesised (the engine failed every attempt, or
    their task killed the worker more often than Dask's ``allowed-failures``)
    are written to the dead-letter file *failures_url* (JSON lines).  Without
    *allow_gaps* the book then fails (nothing is encoded); with it, silence
    of the chunk's estimated length takes its place and the gap is listed in
    the result.

    The encoded audio of an unsplit M4B, MP3 or Opus book is also kept in the
    store under a key made of the chunk keys, pauses and encoder settings
    (``output_spec.keep_encoded``: ``merge.keep-encoded``, read where the
    spec was made, on the client).  When every chunk was already in the store
    and that audio is there too, nothing is decoded or encoded again: the
    book is only remuxed with its chapters, tags and cover.

    With ``output_spec.readalong`` the merge also writes the read-along EPUB
    (:func:`~ebook2audio_dask.readalong.build.build_readalong`), staged with
    the audio; *readalong* holds what reading the source again takes
    (``include_matter``, ``storage_options``, ``ingest``) and where it goes (``url``).
    """
    spec = output_spec or OutputSpec(aac_coder=config.get("merge.aac-coder"))
    if bitrate:
        spec = dataclasses.replace(spec, bitrate=bitrate)
    merge = _Merge(plan, store, spec, chunk_batch, chunk_sizes or {})
    merge.collect(batches, lost or {})
    if merge.dead.failed and not allow_gaps:
        # Nothing is encoded: the dead-letter file says what is missing; a rerun retries only those.
        merge.dead.write(failures_url, storage_options)
        raise BookError(plan.source, merge.dead.summary(failures_url))
    merge.fill_gaps()
    publication = Publication()
    staged = False
    try:
        with tempfile.TemporaryDirectory(prefix="ebook2audio-merge-", dir=scratch_dir()) as tmp:
            workdir = Path(tmp)
            cover_path = cover.write(workdir) if cover is not None else None
            merge.encode(workdir, cover_path)
            merge.finish(
                workdir, cover_path, output_url, publication, storage_options, readalong or {}
            )
            if merge.dead.failed and failures_url:
                publication.stage_bytes(merge.dead.data(), failures_url, storage_options)
            elif failures_url:  # an earlier run's, gone once this one is published
                publication.stale.append(failures_url)
            if merge_cancelled(stop_event):  # the book failed meanwhile: nobody will publish these
                raise _MergeCancelled(plan.source, "conversion cancelled")
            staged = True
    except Ebook2AudioError:
        raise
    except Exception as exc:
        raise BookError(plan.source, f"writing {output_url} failed: {exc}") from exc
    finally:
        if not staged:
            publication.discard(storage_options)
    return merge.result(publication, failures_url)


class _MergeCancelled(BookError):
    """The merge's book is no longer wanted (it failed, or its client went away)."""


class _Merge:
    """One book's merge, step by step (see :func:`merge_task`).

    :meth:`collect` learns every chunk's length and the dead letters from the
    batches' results, :meth:`fill_gaps` sizes the silences of failed chunks,
    :meth:`encode` streams the chunks' PCM into the encoder(s) (or reuses the
    kept encoded audio), :meth:`finish` writes each file's chapters, tags,
    cover and subtitles and stages them, :meth:`result` reports.  Where
    things land is :mod:`~ebook2audio_dask.pipeline.layout`'s.
    """

    def __init__(
        self,
        plan: BookPlan,
        store: ChunkStore,
        spec: OutputSpec,
        chunk_batch: dict[str, int],
        chunk_sizes: dict[str, int],
    ):
        self.plan = plan
        self.store = store
        self.spec = spec
        self.info = spec.info
        self.rate = plan.sample_rate
        self.chunk_batch = chunk_batch
        self.chunk_sizes = chunk_sizes
        self.dead = DeadLetters(plan, store, chunk_batch)
        #: Every chunk's length in samples, known before reading: from the batches and
        #: the store's sizes.
        self.lengths: dict[str, int] = {
            k: (size - WAV_HEADER_BYTES) // 2 for k, size in chunk_sizes.items()
        }
        self.ready = 0.0  # when the last synthesize task of the book finished
        self.gaps: list[dict] = []
        self.gap_at: set[int] = set()  # indices of the chunks that are silence
        self.spoken = [0, 0]  # characters, samples: sizes --split-hours' look-ahead at chapters
        #: Lengths known for every chunk: the chapter times are known before encoding.
        self.known = False
        #: A chunk's real length differs from the one expected: chapters need a second pass.
        self.mismatch = False
        self.buffer: dict[str, bytes] = {}
        self.parts: list[Part] = []
        self.chapter_at = {ch.start: ch for ch in plan.chapters if ch.stop > ch.start}
        self.tags = BookTags(title=plan.title, authors=plan.authors, language=plan.language)
        self.keep = bool(spec.keep_encoded) and self.info.cache and spec.split is None
        self.audio_key = encoded_audio_key(
            plan, spec.bitrate, spec.aac_coder, extra=spec.cache_token()
        )
        self.encoded = ""  # the encoded audio kept in the store (a path in the workdir)
        self.reused = False
        self.one_pass = False
        self.outputs: list[dict] = []
        self.subtitle_files: list[tuple[str, str]] = []
        self.times: list[tuple[int, int]] = []  # the timeline, once the audio is encoded
        self.readalong: dict[str, Any] | None = None  # the read-along EPUB's url and figures

    # ----------------------------------------------------------------- lengths
    def collect(self, batches: tuple[BatchResult | None, ...], lost: dict[int, LostBatch]) -> None:
        """Lengths and dead letters from the batches' results (*lost*: those Dask gave up on)."""
        for index, result in enumerate(batches):
            if index in lost:
                self.dead.batch_lost(index, lost[index])
                continue
            self.dead.batch_done(index, result)
            if result is not None:
                self.lengths.update(result.samples)
                self.ready = max(self.ready, result.finished)
        self.ready = self.ready or time.time()
        for key in self.dead.failed:
            self.lengths.pop(key, None)

    def fill_gaps(self) -> None:
        """Give each failed chunk the length of its silence (its text at the book's speaking
        rate) and note where the gaps are."""
        plan, lengths, dead, rate = self.plan, self.lengths, self.dead, self.rate
        spoken_chars = sum(len(c.text) for c in plan.chunks if c.key in lengths)
        spoken_samples = sum(lengths[c.key] for c in plan.chunks if c.key in lengths)
        for key in dead.failed:
            text = next(c.text for c in plan.chunks if c.key == key)
            lengths[key] = dead.estimate(text, spoken_chars, spoken_samples, rate)
        self.known = all(c.key in lengths for c in plan.chunks)
        self.mismatch = not self.known
        if dead.failed:
            position = 0
            for i, chunk in enumerate(plan.chunks):
                if chunk.key in dead.failed:
                    self.gaps.append(dead.gap(chunk, position / rate, lengths[chunk.key] / rate))
                    self.gap_at.add(i)
                position += lengths.get(chunk.key, 0) + int(round(chunk.pause_after * rate))
        self.spoken = [spoken_chars, spoken_samples]

    # ----------------------------------------------------------------- reading
    def _fetch_from(self, i: int) -> None:
        """Read the next chunks (up to READ_WINDOW) in one concurrent request."""
        keys: list[str] = []
        for later in self.plan.chunks[i:]:
            if len(keys) >= READ_WINDOW:
                break
            key = later.key
            if key not in self.buffer and key not in keys and key not in self.dead.failed:
                keys.append(key)
        self.buffer.update(self.store.read_many(self.plan.spec.engine, keys))

    def chunk_audio(self, i: int, chunk) -> bytes:
        """The PCM of chunk *i* (silence for a failed chunk with allow_gaps)."""
        source = self.plan.source
        if chunk.key in self.dead.failed:
            return bytes(2 * self.lengths[chunk.key])
        if chunk.key not in self.buffer:
            self._fetch_from(i)
        try:
            wav = self.buffer.pop(chunk.key)
        except KeyError:
            raise BookError(
                source, f"chunk {chunk.key} is missing from the chunk store; run again"
            ) from None
        samples, chunk_rate = decode_wav(wav)
        if chunk_rate != self.rate:
            raise BookError(
                source, f"chunk {chunk.key} in the store is damaged; delete it and retry"
            )
        n = len(samples)
        if self.lengths.get(chunk.key) != n:
            self.mismatch = True
        self.lengths[chunk.key] = n
        return samples.astype("<i2", copy=False).tobytes()

    # ----------------------------------------------------------------- encoding
    def encode(self, workdir: Path, cover_path: Path | None) -> None:
        """The book's audio, as :attr:`parts`: reused, in one pass, or streamed for a second."""
        plan, rate, info = self.plan, self.rate, self.info
        self.encoded = str(workdir / f"encoded{info.ext}")
        if (
            self.keep
            and not self.chunk_batch
            and all(c.key in self.chunk_sizes for c in plan.chunks)
        ):
            self.reused = self.store.get_encoded(self.audio_key, self.encoded)
        if self.reused:  # every chunk cached and the audio already encoded: remux only
            total = sum(self.lengths[c.key] + int(round(c.pause_after * rate)) for c in plan.chunks)
            self.parts.append(
                Part(start=0, first=0, path=self.encoded, end=total, stop=len(plan.chunks))
            )
        elif self.known and self.spec.split is None and self.spec.loudnorm is None:
            # One pass: the chapter times come from the lengths known already.
            times = timeline(plan, self.lengths, rate)
            total = (
                times[-1][0] + times[-1][1] + int(round(plan.chunks[-1].pause_after * rate))
                if times
                else 0
            )
            whole = Part(start=0, first=0, path="", end=total, stop=len(plan.chunks))
            final = FinalFile.make(
                self.spec,
                sample_rate=rate,
                chapters=part_marks(plan, times, whole, total),
                tags=self.tags,
                cover_path=cover_path,
                workdir=workdir,
            )
            self.stream(workdir, final, str(workdir / f"final-1{info.ext}"))
            self.one_pass = not self.mismatch
        else:
            self.stream(workdir)

    def stream(
        self, workdir: Path, final: FinalFile | None = None, final_path: str | None = None
    ) -> None:
        """Every chunk and pause into one encoder after the other (one per output file).

        With *final*, the one unsplit file is written finished, at *final_path*, in this one pass.
        """
        plan, spec, rate = self.plan, self.spec, self.rate
        cuts = PartCuts(spec, rate, self.chapter_at, self.spoken)
        self.parts = parts = cuts.parts
        encoder: PartEncoder | None = None
        # Loudness: this pass writes lossless FLAC and a meter hears the whole book; each
        # file is then encoded from its FLAC with loudnorm's measured second pass.
        lossless = (
            dataclasses.replace(spec, format="flac", loudnorm=None) if spec.loudnorm else None
        )
        meter = (
            PartEncoder(spec, rate, str(workdir / "meter"), measure=True) if spec.loudnorm else None
        )
        try:
            for i, chunk in enumerate(plan.chunks):
                data = self.chunk_audio(i, chunk)
                pause = int(round(chunk.pause_after * rate))
                part = cuts.add(i, len(data) // 2, pause)
                if part is not None:  # a new file starts with this chunk
                    if encoder is not None:
                        encoder.close()
                        encoder = None
                    if final is not None:
                        part.path = final_path
                    else:
                        ext = ".flac" if lossless else self.info.ext
                        part.path = str(workdir / f"part-{len(parts)}{ext}")
                    encoder = PartEncoder(lossless or spec, rate, part.path, final=final)
                for sink in (encoder, meter) if meter else (encoder,):
                    sink.write(data)
                    if pause:
                        sink.write(bytes(2 * pause))
            cuts.close(len(plan.chunks))
            encoder.close()
            encoder = None
            if meter is not None:
                meter.close()
                for part in parts:
                    target = part.path[: -len(".flac")] + self.info.ext
                    normalize_part(spec, rate, part.path, target, meter.measured)
                    os.unlink(part.path)
                    part.path = target
                meter = None
        finally:
            for sink in (encoder, meter):
                if sink is not None:
                    sink.kill()

    # ----------------------------------------------------------------- files
    def finish(
        self,
        workdir: Path,
        cover_path: Path | None,
        output_url: str,
        publication: Publication,
        storage_options: dict[str, Any] | None,
        readalong: dict[str, Any],
    ) -> None:
        """Each file finished (chapters, tags, cover; its subtitles), the read-along EPUB
        written around them, and all staged at their names."""
        plan, spec, parts = self.plan, self.spec, self.parts
        self.times = times = timeline(plan, self.lengths, self.rate)
        names = output_names(output_url, spec, plan, parts)
        finals: list[tuple[str, str]] = []
        for n, (part, url) in enumerate(zip(parts, names), 1):
            final_path = str(workdir / f"final-{n}{self.info.ext}")
            marks = part_marks(plan, times, part, parts[-1].end)
            if not self.one_pass:
                self._second_pass(workdir, n, part, final_path, marks, cover_path)
            elif self.keep:  # the finished file is the kept audio too (a rerun remuxes it)
                self.encoded = final_path
            entry = self._entry(url, part, marks)
            if spec.subtitles:
                entry["subtitles"] = self._subtitles(workdir, n, part, url)
            self.outputs.append(entry)
            if n == 1 and spec.split == "chapters":
                publication.own_folder(posixpath.dirname(url), storage_options)
            if self.keep and not self.reused and not self.dead.failed:
                self._keep_encoded()
            finals.append((final_path, url))
        if spec.readalong:
            self._readalong(workdir, finals, output_url, readalong)
        for path, url in finals:
            publication.stage_file(path, url, storage_options)
        for path, url in self.subtitle_files:
            publication.stage_file(path, url, storage_options)

    def _second_pass(
        self,
        workdir: Path,
        n: int,
        part: Part,
        final_path: str,
        marks: list[ChapterMark],
        cover_path: Path | None,
    ) -> None:
        """File *n* from its first-pass audio: chapters, tags and cover added (a remux)."""
        spec, tags = self.spec, self.tags
        title = tags.title
        if spec.split == "chapters":
            title = self.chapter_at[part.first].title
        elif spec.split == "hours":
            title = f"{tags.title} - Part {n} of {len(self.parts)}"
        part_tags = dataclasses.replace(
            tags,
            title=title,
            album=tags.title,
            track=(n, len(self.parts)) if spec.split else None,
        )
        source = part.path
        if source == final_path:  # one pass with a length that differed: chapters again
            source = str(workdir / f"pass1-{n}{self.info.ext}")
            os.replace(final_path, source)
        finish_file(
            spec,
            source,
            final_path,
            sample_rate=self.rate,
            chapters=marks,
            tags=part_tags,
            cover_path=cover_path,
            workdir=workdir,
        )
        if source != self.encoded:
            if self.keep:  # (one file) kept in the store below
                os.replace(source, self.encoded)
            else:
                os.unlink(source)

    def _entry(self, url: str, part: Part, marks: list[ChapterMark]) -> dict:
        """The report's entry for one file (times in seconds)."""
        rate = self.rate
        return {
            "url": url,
            "start_s": round(part.start / rate, 3),
            "end_s": round(part.end / rate, 3),
            "duration_s": round((part.end - part.start) / rate, 3),
            "chapters": [
                {
                    "title": m.title,
                    "start_s": round(m.start_sample / rate, 3),
                    "end_s": round(m.end_sample / rate, 3),
                }
                for m in marks
            ],
            "subtitles": None,
        }

    def _readalong(
        self,
        workdir: Path,
        finals: list[tuple[str, str]],
        output_url: str,
        options: dict[str, Any],
    ) -> None:
        """Write the read-along EPUB around the finished files (staged with the subtitles)."""
        from ..readalong.build import AudioPart, build_readalong, readalong_url

        parts = [
            AudioPart(path, p.start, p.end, p.first, p.stop)
            for p, (path, _) in zip(self.parts, finals, strict=True)
        ]
        path = str(workdir / "readalong.epub")
        stats = build_readalong(
            self.plan,
            self.times,
            parts,
            self.spec.format,
            path,
            workdir,
            include_matter=bool(options.get("include_matter")),
            storage_options=options.get("storage_options"),
            ingest=options.get("ingest"),
        )
        url = options.get("url") or readalong_url(output_url)
        self.subtitle_files.append((path, url))
        self.readalong = {"url": url, **dataclasses.asdict(stats)}

    def _subtitles(self, workdir: Path, n: int, part: Part, url: str) -> str:
        """Write file *n*'s subtitles; returns their URL (staged with the audio)."""
        kind = self.spec.subtitles
        cues = part_cues(self.plan, self.times, part, self.gap_at, self.rate)
        path = str(workdir / f"final-{n}.{kind}")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(format_subtitles(cues, kind))
        sub_url = with_suffix(url, "." + kind)
        self.subtitle_files.append((path, sub_url))
        return sub_url

    def _keep_encoded(self) -> None:
        """Keep the encoded audio in the store, for a rerun to remux (a cache: may fail)."""
        if not os.path.exists(self.encoded):
            return
        try:  # a cache, not the product: a failure here only costs a later rebuild
            self.store.put_encoded(self.audio_key, self.encoded)
        except Ebook2AudioError as exc:
            logger.warning("%s: encoded audio not kept: %s", self.plan.source, exc)

    # ----------------------------------------------------------------- report
    def result(self, publication: Publication, failures_url: str | None) -> MergeResult:
        """The merge's report (the files staged in *publication*)."""
        plan, rate, dead = self.plan, self.rate, self.dead
        times, end = self.times, self.parts[-1].end

        def at(i: int) -> int:
            return times[i][0] if i < len(times) else end

        chapters = tuple(
            ChapterResult(
                ch.index,
                ch.title,
                at(ch.start) / rate,
                at(ch.stop) / rate,
                ch.chars,
                ch.stop - ch.start,
            )
            for ch in plan.chapters
        )
        audio_s = end / rate
        digest("from-cache", len({c.key for c in plan.chunks} & set(self.chunk_sizes)), "chunks")
        digest("merged", audio_s, "audio-seconds")
        warnings: tuple[str, ...] = ()
        if self.gaps:
            warnings = (f"{dead.summary(failures_url, gaps=True)}",)
        return MergeResult(
            output=self.outputs[0]["url"],
            audio_s=audio_s,
            merge_s=max(0.0, time.time() - self.ready),
            chapters=chapters,
            audio_reused=self.reused,
            warnings=warnings,
            gaps=tuple(self.gaps),
            chunks_failed=len(dead.failed),
            failures_url=failures_url if dead.failed else None,
            outputs=tuple(self.outputs),
            subtitles=tuple(
                url for _, url in self.subtitle_files if url != (self.readalong or {}).get("url")
            ),
            readalong=self.readalong,
            format=self.spec.format,
            publication=publication,
            passes=1 if self.one_pass else 2,
        )


def encoded_audio_key(
    plan: BookPlan, bitrate: str, coder: str | None, extra: dict[str, Any] | None = None
) -> str:
    """Content key of a book's encoded audio: its chunks and pauses, in order, and the encoder
    settings.

    *extra*: what else decides the audio (format, loudness targets: see
    :meth:`~ebook2audio_dask.audio.formats.OutputSpec.cache_token`); empty for
    a plain M4B, whose key is unchanged since before formats existed.
    """
    rate = plan.sample_rate
    sequence = [(c.key, int(round(c.pause_after * rate))) for c in plan.chunks]
    body: dict[str, Any] = {
        "v": 1,
        "rate": rate,
        "bitrate": str(bitrate),
        "coder": coder,
        "seq": sequence,
    }
    if extra:
        body["out"] = extra
    payload = json.dumps(body, separators=(",", ":"), sort_keys=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]
