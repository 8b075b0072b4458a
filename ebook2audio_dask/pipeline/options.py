"""The options of a conversion, each defined once.

Every option is a field of :class:`ConvertOptions` (what each book of a run
is converted with) or of :class:`RunOptions` (where and in which order the
books run), declared with :func:`option`: its documented type, its help
text, the config key that gives its default (``None`` means "read
``ebook2audio.<key>`` when it is used", so the packaged ``ebook2audio.yaml``
is the only default), its command-line flag and how a flag's value becomes
the Python value.  Everything else is derived from these fields:

* :func:`~ebook2audio_dask.convert` takes every option as a keyword argument
  (:func:`split_options` refuses an unknown one with :class:`TypeError`, as
  Python does), and its signature and numpydoc ``Parameters`` section are
  generated (:func:`signature_parameters`, :func:`numpydoc_parameters`), so
  ``help()`` and the API reference show each option once;
* ``ebook2audio convert`` gets one click option per option with ``flags``
  (``cli.main`` builds them from :func:`cli_help`, :attr:`Option.flags`...),
  and the CLI reference (sphinx-click) renders them;
* ``tests/test_options.py`` checks the three agree.

What is not an option stays explicit: ``convert``'s *client*, progress
callbacks and bars are Python objects with no flag and no config key (a type
checker should see them), and the CLI's own flags (``--output``, TLS files,
``--storage-options`` JSON, ``--s3-endpoint``, ``--endpoint``,
``--no-progress``, ``--debug``) say how a command line reaches an option or
the terminal, not what is converted.

Help texts are written once, in reStructuredText kept light: ``literal``
(shown bare on the command line), Sphinx roles (their target shown), and
:samp:`:opt:\\`name\\`` for another option (``--flag`` on the command line,
``name`` in Python).  :attr:`Option.api` and :attr:`Option.cli` add what only
one side needs (how a value is written).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.config
import yaml

from .. import config
from ..audio import FORMATS
from ..errors import UsageError, one_line

__all__ = [
    "PAUSE_KINDS",
    "ConvertOptions",
    "Option",
    "RunOptions",
    "api_help",
    "check_pauses",
    "cli_help",
    "numpydoc_parameters",
    "option",
    "options",
    "parse_chapters",
    "parse_flags",
    "parse_pauses",
    "parse_settings",
    "signature_parameters",
    "split_options",
]

#: Kinds of pause, in ``pauses=`` / ``--pause KIND=SECONDS``.
PAUSE_KINDS = ("sentence", "paragraph", "title", "chapter")

#: A ``--chapters`` value of numbers and ranges only (anything else is a title).
_NUMBERS = re.compile(r"^[\s\d,-]+$")


@dataclass(frozen=True)
class Option:
    """One option of a conversion: how Python, the command line and the docs show it.

    Attributes
    ----------
    type : str
        Type of the Python value, as the numpydoc ``Parameters`` section says it.
    help : str
        What the option does (light reStructuredText, see the module docstring).
    config : str, optional
        Key below ``ebook2audio`` that gives the default when the option is ``None``.
    default : str, optional
        What ``None`` means, said in words, when no config key says it (or
        when the key's value needs words: ``null`` engine: "chosen from each
        book's language").
    api, cli : str
        Text only the Python docs / the command line show, after *help*.
    flags : tuple of str
        click declarations (``"--voice"``, ``"--loudnorm/--no-loudnorm"``);
        empty for an option that only Python takes.
    metavar : str, optional
        The flag's value placeholder.
    multiple, is_flag : bool
        A repeatable flag / a flag without a value.
    choices : tuple of str, optional
        The values the flag accepts.
    number : type, optional
        ``int`` or ``float``: the flag's value is a number of at least *min*
        (above it when *min_open*).
    min : float, optional
    min_open : bool
    parse : callable, optional
        The flag's value (a tuple for *multiple*) → the Python value.
    coerce : callable, optional
        The Python value → the field's value (checks it; may raise
        :class:`~ebook2audio_dask.errors.UsageError`).
    default_api : str, optional
        What ``None`` means from Python, when it is not what it means on the
        command line (*gpus*: no GPU).
    name : str
        The option's name (its field's), filled in by :func:`options`.
    """

    type: str
    help: str
    config: str | None = None
    default: str | None = None
    api: str = ""
    cli: str = ""
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    multiple: bool = False
    is_flag: bool = False
    choices: tuple[str, ...] | None = None
    number: Any = None
    min: float | None = None
    min_open: bool = False
    parse: Callable[[Any], Any] | None = None
    coerce: Callable[[Any], Any] | None = None
    default_api: str | None = None
    name: str = ""

    @property
    def flag(self) -> str | None:
        """The option's (first) long flag, ``--voice``; ``None`` when Python only takes it."""
        return self.flags[0].split("/")[0] if self.flags else None

    @property
    def dest(self) -> str:
        """The click parameter name: the option's own."""
        return self.name


def option(
    type: str,
    help: str,
    *,
    config: str | None = None,
    default: str | None = None,
    api: str = "",
    cli: str = "",
    flags: tuple[str, ...] | str = (),
    metavar: str | None = None,
    multiple: bool = False,
    is_flag: bool = False,
    choices: Iterable[str] | None = None,
    number: Any = None,
    min: float | None = None,
    min_open: bool = False,
    parse: Callable[[Any], Any] | None = None,
    coerce: Callable[[Any], Any] | None = None,
    default_api: str | None = None,
    hashed: bool = True,
    shown: bool = True,
) -> Any:
    """A dataclass field (default ``None``) carrying its :class:`Option` in its metadata.

    *hashed* ``False`` leaves the field out of the dataclass's hash and
    equality (dicts), *shown* ``False`` out of its repr (credentials).  The
    other arguments are :class:`Option`'s.
    """
    meta = Option(
        type=type,
        help=help,
        config=config,
        default=default,
        api=api,
        cli=cli,
        flags=(flags,) if isinstance(flags, str) else tuple(flags),
        metavar=metavar,
        multiple=multiple,
        is_flag=is_flag,
        choices=tuple(choices) if choices is not None else None,
        number=number,
        min=min,
        min_open=min_open,
        parse=parse,
        coerce=coerce,
        default_api=default_api,
    )
    return field(default=None, hash=hashed, compare=hashed, repr=shown, metadata={"option": meta})


# -- the parsers of flag values and the checks of Python values ------------------------------


def parse_chapters(
    spec: str | tuple[str, ...] | list[str] | None,
) -> tuple[int | range | str, ...] | None:
    """``--chapters`` values → chapter numbers, ranges and titles; none → ``None`` (all chapters).

    A value made of numbers and ranges (``"1-3,7"``) gives ``range(1, 4)``
    and ``7``: a range stays a range, however wide (``1-20000000`` costs
    nothing), and is checked against each book's chapter count by
    :meth:`~ebook2audio_dask.model.Book.select`.  Any other value is one
    chapter title or pattern (``"The Real Princess"``, ``"Stave*"``), commas
    included, matched per book by
    :meth:`~ebook2audio_dask.model.Book.find_chapters`.  Repeat the option
    for several titles.  A title made only of digits is read as a number.
    """
    if not spec:
        return None
    values = [spec] if isinstance(spec, str) else list(spec)
    out: list[int | range | str] = []
    for value in values:
        if not value.strip():
            continue
        if not _NUMBERS.match(value):
            out.append(" ".join(value.split()))
            continue
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = (int(x) for x in part.split("-", 1))
                    if a > b or a < 1:
                        raise ValueError
                    out.append(range(a, b + 1) if b > a else a)
                else:
                    n = int(part)
                    if n < 1:
                        raise ValueError
                    out.append(n)
            except ValueError:
                raise UsageError(
                    f"bad chapter range {one_line(part, 40)!r} in --chapters (use e.g. 1-3,7)"
                ) from None
    return tuple(dict.fromkeys(out)) or None


def parse_settings(pairs: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """``("length_scale=1.1", "speaker_id=3")`` → ``{"length_scale": 1.1, "speaker_id": 3}``.

    Values are read as YAML scalars (numbers, booleans, strings), as dask does
    for config values.
    """
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad --setting {pair!r} (use KEY=VALUE, e.g. length_scale=1.1)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def parse_pauses(pairs: tuple[str, ...] | list[str]) -> dict[str, float] | None:
    """``("chapter=3", "sentence=0.4")`` → ``{"chapter": 3.0, "sentence": 0.4}``.

    The kinds and ranges are checked by :func:`check_pauses`.
    """
    if not pairs:
        return None
    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UsageError(f"bad --pause {pair!r} (use KIND=SECONDS, e.g. chapter=3)")
    return out


def check_pauses(pauses: Mapping[str, float] | None) -> dict[str, float] | None:
    """Validate ``pauses=``: known kinds (:data:`PAUSE_KINDS`), 0 to 60 seconds.

    Raises
    ------
    UsageError
        An unknown kind, or a value that is not a number of seconds in range.
    """
    if not pauses:
        return None
    out = {}
    for kind, value in pauses.items():
        if kind not in PAUSE_KINDS:
            raise UsageError(f"unknown pause {kind!r}; choose from {', '.join(PAUSE_KINDS)}")
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"pause {kind}: {value!r} is not a number of seconds") from None
        if not 0 <= seconds <= 60:
            raise UsageError(f"pause {kind}: {seconds:g} s is out of range (0 to 60)")
        out[kind] = seconds
    return out


def _chapter_selection(chapters) -> tuple | None:
    """``chapters=`` as a tuple of numbers, ranges and titles (a range is never expanded)."""
    if chapters is None:
        return None
    if isinstance(chapters, (int, range, str)):
        return (chapters,)
    return tuple(chapters)


def _str_tuple(values: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """One string or several → a tuple of them; none → ``None``."""
    if not values:
        return None
    return (values,) if isinstance(values, str) else tuple(values)


def _adapt(text: str | None) -> tuple[int, int] | None:
    """``--adapt MIN:MAX`` → ``(MIN, MAX)``; a bad value is a usage error."""
    from ..cluster import parse_adapt

    try:
        return parse_adapt(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _memory_limit(value: str | float | None) -> str | float:
    """``None`` → ``"default"``, which the embedded cluster reads as ``cluster.memory-limit``."""
    return "default" if value is None else value


# -- the options -----------------------------------------------------------------------------

_BY_LANGUAGE = "chosen from each book's language"


@dataclass(frozen=True)
class ConvertOptions:
    """Settings of one conversion run, shared by all its books.

    Built by :func:`~ebook2audio_dask.convert` (through :func:`split_options`);
    build one yourself for :func:`~ebook2audio_dask.submit_book`.  Its fields
    are *output* and *resources* below, and the options of
    :func:`~ebook2audio_dask.convert` of the same names, documented there,
    with the values checked: *chapters* and *lexicons* as tuples, *pauses*
    checked.  Every ``None`` is read from the ``ebook2audio`` dask config
    namespace when it is used.

    Parameters
    ----------
    output : str
        Output folder (path or fsspec URL).
    resources : dict, optional
        Worker resources each synthesize task requests (default
        ``ebook2audio.synthesize.resources``).
    """

    output: str
    engine: str | None = option(
        "str",
        "Speech engine: ``piper``, ``espeak``, ``coqui``, ``kokoro``, ``openai``, or one a "
        "plugin adds (``ebook2audio engines`` lists them).",
        config="engine",
        default=_BY_LANGUAGE,
        flags="--engine",
    )
    voice: str | None = option(
        "str",
        "Voice: a voice id, a Piper ``.onnx`` model, a Coqui speaker name, XTTS reference "
        "clip(s) to clone (a folder or a glob works too), or a Kokoro voice or blend "
        "(``af_heart:0.7+bf_emma:0.3``).",
        api="Several clips are joined by ``|``.",
        cli="Repeat for several clips.",
        config="voice",
        default=_BY_LANGUAGE,
        flags="--voice",
        multiple=True,
        parse=lambda voices: "|".join(voices) or None,
    )
    language: str | None = option(
        "str",
        "Override the books' language (BCP 47, e.g. ``fr``, ``en-GB``).",
        default="each book's own",
        flags="--language",
    )
    model: str | None = option(
        "str",
        "Model of the engine, for the engines that load one.  Coqui: a folder (config.json + "
        "checkpoint), a checkpoint file, an fsspec URL or a Coqui model name already "
        "downloaded (default ``ebook2audio.coqui.model``).  Kokoro: a Kokoro-82M folder "
        "(.onnx + voices, or .pth + config.json + voices/), model file or fsspec URL "
        "(default ``ebook2audio.kokoro.model``).  OpenAI-compatible server: the server's "
        "model name (``tts-1``, ``kokoro``...; default ``ebook2audio.openai.model``).",
        flags="--model",
    )
    chapters: tuple[int | range | str, ...] | None = option(
        "iterable of int, range or str",
        "Chapters to convert: numbers as ``ebook2audio inspect`` shows them, and/or titles: "
        "a whole title, a part of exactly one, or a pattern with ``*``.",
        api="One number, range or title, or an iterable of them; numbers as "
        ":func:`~ebook2audio_dask.read_book` numbers the chapters, titles as "
        ":meth:`~ebook2audio_dask.Book.find_chapters` matches them.",
        cli='E.g. ``1-3,7`` or ``"Stave*"``; repeatable.',
        default="all",
        flags="--chapters",
        multiple=True,
        parse=parse_chapters,
        coerce=_chapter_selection,
    )
    include_matter: bool | None = option(
        "bool",
        "Also convert front/back matter (title page, contents, licence, colophon).",
        config="include-matter",
        flags="--include-matter",
        is_flag=True,
    )
    cache: str | None = option(
        "str", "Chunk store URL.", config="cache", flags="--cache", metavar="URL"
    )
    storage_options: dict[str, Any] | None = option(
        "dict",
        "fsspec options for inputs, output and cache: flat (every remote URL) or keyed by "
        'protocol (``{"s3": {"profile": "books"}}``).  fsspec\'s own ``FSSPEC_S3_*`` '
        "environment variables work too.  Never printed, logged, or put in task names or "
        "reports.",
        hashed=False,
        shown=False,
    )
    output_storage_options: dict[str, Any] | None = option(
        "dict",
        "fsspec options for the output folder, when they differ from the inputs' "
        "(another account, another endpoint).",
        default=":opt:`storage_options`",
        hashed=False,
        shown=False,
    )
    cache_storage_options: dict[str, Any] | None = option(
        "dict",
        "fsspec options for the chunk store, when they differ from the inputs'.",
        default=":opt:`storage_options`",
        hashed=False,
        shown=False,
    )
    batch_chars: int | None = option(
        "int",
        "Characters per synthesize task (short books are split finer so every worker gets work).",
        config="synthesize.batch-chars",
        flags="--batch-chars",
        number=int,
        min=1,
    )
    resources: dict[str, float] | None = field(default=None, hash=False, compare=False)
    engine_threads: int | None = option(
        "int",
        "CPU threads per engine instance.",
        config="synthesize.engine-threads",
        flags="--engine-threads",
        number=int,
        min=1,
    )
    settings: dict[str, Any] | None = option(
        "dict",
        "Engine settings that change the audio (e.g. ``length_scale=1.1``, ``temperature=0.7``).",
        api='A dict, e.g. ``{"length_scale": 1.1}``.',
        cli="Values are read as YAML scalars; repeatable.",
        flags="--setting",
        metavar="KEY=VALUE",
        multiple=True,
        parse=parse_settings,
        hashed=False,
    )
    retries: int | None = option(
        "int",
        "More attempts for a chunk the engine fails on.  A chunk that fails them all is "
        "written to ``<output>/<stem>.failures.jsonl`` (chunk key, chapter, text excerpt, "
        "error, worker, attempts), as are the chunks of a task that killed its worker more "
        "often than Dask's ``distributed.scheduler.allowed-failures``, and the book fails "
        "(exit code 1) unless :opt:`allow_gaps`.",
        config="synthesize.retries",
        flags="--retries",
        number=int,
        min=0,
    )
    allow_gaps: bool | None = option(
        "bool",
        "Finish books whose chunks could not all be synthesised, with silence in their "
        "place (listed in the report's ``gaps`` and in ``<output>/<stem>.failures.jsonl``), "
        "instead of failing them.",
        config="synthesize.allow-gaps",
        flags="--allow-gaps",
        is_flag=True,
    )
    slots: int | None = option(
        "int",
        "Synthesize tasks the cluster will run at once, for sizing batches.",
        default="the workers present, or the maximum of :opt:`adapt`",
    )
    format: str | None = option(
        "str",
        "Audio format: ``m4b`` (AAC with chapters), ``mp3`` (ID3v2.3 tags, CHAP chapters), "
        "``opus`` (Ogg Opus), ``flac``, or ``wav`` (no chapters in the file); see "
        "docs/outputs.md.",
        config="output.format",
        flags="--format",
        choices=tuple(FORMATS),
    )
    split: str | None = option(
        "str",
        "``chapters``: one file per chapter, ``<output>/<stem>/<NN> - <title>.<ext>``, with "
        "track numbers; ``none``: one file.",
        config="output.split",
        flags="--split",
        choices=("none", "chapters"),
    )
    split_hours: float | None = option(
        "float",
        "Parts of at most this many hours (e.g. 10 or 0.5), ``<stem> - Part i of n.<ext>``, "
        "cut between sentences, at a chapter's start when one is close; each part holds its "
        'chapters (one cut across parts appears in both, "(continued)").',
        config="output.split-hours",
        default="one part",
        flags="--split-hours",
        metavar="HOURS",
        number=float,
        min=0,
        min_open=True,
    )
    loudnorm: bool | None = option(
        "bool",
        "EBU R128 loudness normalisation with ffmpeg's ``loudnorm`` (one pass, dynamic; "
        "targets ``ebook2audio.output.loudness``: -16 LUFS, -1.5 dBTP, LRA 11).",
        config="output.loudnorm",
        flags="--loudnorm/--no-loudnorm",
    )
    subtitles: str | None = option(
        "str",
        "``srt`` or ``vtt``: subtitles (read-along text) next to each audio file, one cue per "
        "sentence, timed from the real audio; ``none``: no subtitles.",
        config="output.subtitles",
        flags="--subtitles",
        choices=("none", "srt", "vtt"),
    )
    readalong: bool | None = option(
        "bool",
        "Also write ``<stem>.readalong.epub``: the book's text (its own documents for an "
        "EPUB, a generated EPUB 3 for other inputs) with EPUB 3 Media Overlays, so a reader "
        "(Thorium, Apple Books...) highlights each sentence as it is spoken, timed from the "
        "merged audio, which the EPUB holds.  Needs ``--format m4b`` or ``mp3``; each "
        "sentence is then a chunk of its own (see docs/outputs.md).",
        config="output.readalong",
        flags="--readalong/--no-readalong",
    )
    layout: str | None = option(
        "str",
        "Where a book's files go: ``flat``: in the output folder; ``audiobookshelf``: in "
        "``<output>/<Author>/<Title>/`` with ``metadata.json``, ``reader.txt``, "
        "``desc.txt`` and ``cover.jpg`` beside the audio, as Audiobookshelf's scanner reads "
        "them (see docs/outputs.md).",
        config="output.layout",
        flags="--layout",
        choices=("flat", "audiobookshelf"),
    )
    pauses: dict[str, float] | None = option(
        "dict",
        "Seconds of silence (0 to 60) after a sentence group, paragraph, title or chapter, "
        "over ``ebook2audio.pauses``.",
        api="A dict by kind: ``sentence``, ``paragraph``, ``title``, ``chapter``, e.g. "
        '``{"chapter": 3.0}``.',
        cli="Written ``KIND=SECONDS``, e.g. ``--pause chapter=3``; repeatable.",
        flags="--pause",
        metavar="KIND=SECONDS",
        multiple=True,
        parse=parse_pauses,
        coerce=check_pauses,
        hashed=False,
    )
    normalize: bool | None = option(
        "bool",
        "Say numbers, Roman numerals and abbreviations in words, per language (en, fr, nl "
        "rules), before synthesis; off sends the text as written.",
        config="text.normalize",
        flags="--normalize/--no-normalize",
    )
    lexicons: tuple[str, ...] | None = option(
        "str or iterable of str",
        "User pronunciation lexicons (paths or URLs): YAML/JSON ``{language: {word: "
        "replacement}}`` (a respelling, or ``/IPA/``) or PLS XML, read after those of "
        "``ebook2audio.text.lexicons``; see docs/text.md.",
        cli="Repeatable.",
        flags="--lexicon",
        metavar="FILE",
        multiple=True,
        parse=_str_tuple,
        coerce=_str_tuple,
    )

    def output_spec(self):
        """The merge's output settings (arguments over ``ebook2audio.output``).

        Returns
        -------
        ebook2audio_dask.audio.OutputSpec
        """
        from ..audio import OutputSpec

        return OutputSpec.resolve(
            self.format,
            self.split,
            self.split_hours,
            self.loudnorm,
            self.subtitles,
            self.readalong,
        )

    def store(self):
        """The chunk store: *cache* (or ``ebook2audio.cache``) with its storage options.

        Returns
        -------
        ebook2audio_dask.storage.ChunkStore
        """
        from ..storage import ChunkStore

        return ChunkStore.make(config.get("cache", override=self.cache), self.cache_options)

    @property
    def output_options(self) -> dict[str, Any] | None:
        """Storage options of the output folder."""
        return (
            self.output_storage_options
            if self.output_storage_options is not None
            else self.storage_options
        )

    @property
    def cache_options(self) -> dict[str, Any] | None:
        """Storage options of the chunk store."""
        return (
            self.cache_storage_options
            if self.cache_storage_options is not None
            else self.storage_options
        )

    def plan_request(self):
        """What the planner needs of these options; :class:`PlanRequest` reads the config
        for whatever they leave unset, then and there, on the client.

        Returns
        -------
        ebook2audio_dask.pipeline.tasks.PlanRequest
        """
        from ..text.chunk import Pauses
        from ..text.lexicon import configured_lexicon
        from ..text.spoken import normalize_features
        from .tasks import PlanRequest

        spec = self.output_spec()
        return PlanRequest(
            chapters=self.chapters,
            engine=self.engine,
            voice=self.voice,
            language=self.language,
            model=self.model,  # None: each engine's own default (coqui.model, kokoro.model)
            settings=tuple(sorted((self.settings or {}).items())),
            pauses=Pauses(**{k: float(v) for k, v in (self.pauses or {}).items()}),
            normalize=normalize_features(self.normalize),
            # subtitles are cut at the sentence ends the planner finds (not re-split at merge)
            sentences=spec.subtitles is not None or spec.readalong,
            # a read-along book times each sentence by the start of its own chunk
            sentence_chunks=spec.readalong,
            lexicon=configured_lexicon(self.lexicons, self.storage_options),
        )


@dataclass(frozen=True)
class RunOptions:
    """Where the books of a run are converted, and in which order.

    Built by :func:`~ebook2audio_dask.convert` (through :func:`split_options`);
    its fields are the options of :func:`~ebook2audio_dask.convert` of the
    same names, documented there.  :meth:`client_for` opens the cluster they
    describe.
    """

    n_workers: int | None = option(
        "int",
        "Workers of the embedded cluster.",
        config="cluster.n-workers",
        default="as many as the cores allow with :opt:`engine_threads` each",
        flags="--workers",
        number=int,
        min=1,
    )
    gpus: str | list[str] | None = option(
        "str or iterable of str",
        "GPUs of the embedded cluster, one worker each: ``auto``, ``none``, or ids such as "
        "``0,1``.",
        api='``"default"``: ``ebook2audio.cluster.gpus``.',
        config="cluster.gpus",
        default_api="no GPU",
        flags="--gpus",
        parse=lambda gpus: gpus or "default",
    )
    slots_per_gpu: int | None = option(
        "int",
        "Synthesize tasks each embedded GPU worker runs at once, sharing one copy of the "
        "engine.  2-4 help a small model (Kokoro) that leaves a big GPU idle.",
        config="cluster.slots-per-gpu",
        flags="--slots-per-gpu",
        metavar="N",
        number=int,
        min=1,
    )
    memory_limit: str | float | None = option(
        "str or float",
        "Memory limit of each embedded worker: ``4GiB``, ``auto`` (the machine's memory "
        "shared among the workers) or ``0`` (none).",
        config="cluster.memory-limit",
        flags="--memory-limit",
        parse=lambda limit: limit or None,
    )
    adapt: tuple[int, int] | None = option(
        "(int, int)",
        "An adaptive cluster (embedded, or SLURM with :opt:`slurm`): from a minimum to a "
        "maximum of workers, following the queued synthesis.",
        api="Written ``(minimum, maximum)``.",
        cli="Written ``MIN:MAX``.",
        default="a fixed number of workers",
        flags="--adapt",
        metavar="MIN:MAX",
        parse=_adapt,
    )
    slurm: bool | dict[str, Any] | None = option(
        "bool or dict",
        "Run the workers as SLURM jobs (dask-jobqueue), as the ``ebook2audio.slurm`` config "
        "section says.",
        api='``True``, or a dict of overrides of that section, e.g. ``{"partition": "gpu"}``.',
        flags="--slurm",
        is_flag=True,
    )
    scheduler: str | None = option(
        "str",
        "Run on an existing Dask scheduler (``tcp://HOST:PORT`` or ``tls://HOST:PORT``).",
        default="an embedded cluster",
        flags="--scheduler",
    )
    cluster: str | None = option(
        "str",
        "Cluster backend: ``local`` (embedded), ``existing`` (:opt:`scheduler`), ``slurm``, "
        "or one an installed package adds (entry points ``ebook2audio_dask.clusters``); "
        "``auto`` picks from :opt:`scheduler` and :opt:`slurm`.",
        config="cluster.backend",
        flags="--cluster",
        metavar="NAME",
    )
    priority: tuple[str, ...] | None = option(
        "iterable of str",
        "Books to convert first: paths/URLs, file names or glob patterns (matched against "
        "each input's full path and its file name).  Otherwise books are worked on in input "
        "order: the first finishes first, and a book's merge goes before new synthesis.",
        cli="Repeatable.",
        flags="--priority",
        metavar="BOOK",
        multiple=True,
        parse=lambda books: tuple(books) or None,
        coerce=_str_tuple,
    )

    def client_for(self, client=None, engine_threads: int | None = None, **kwargs):
        """:func:`ebook2audio_dask.cluster.client_for` with these options.

        Parameters
        ----------
        client : distributed.Client, optional
            Use this client (the other options are then unused).
        engine_threads : int, optional
            Threads per engine of the embedded workers.
        **kwargs
            More arguments of ``client_for`` (``security``, ``tls``).
        """
        from ..cluster import client_for

        return client_for(
            client,
            self.scheduler,
            self.n_workers,
            engine_threads,
            gpus=self.gpus,
            adapt=self.adapt,
            slurm=self.slurm,
            memory_limit=_memory_limit(self.memory_limit),
            slots_per_gpu=self.slots_per_gpu,
            backend=self.cluster,
            **kwargs,
        )


def _fields_of(cls: type) -> list[Option]:
    found = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is not None:
            found.append(dataclasses.replace(meta, name=f.name))
    return found


_OPTIONS: dict[str, Option] = {o.name: o for o in _fields_of(ConvertOptions)}
_RUN = {o.name: o for o in _fields_of(RunOptions)}
_OPTIONS.update(_RUN)


def options() -> dict[str, Option]:
    """Every option, by name: :class:`ConvertOptions`'s, then :class:`RunOptions`'s."""
    return dict(_OPTIONS)


def parse_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    """The command line's values, by option name → :func:`~ebook2audio_dask.convert`'s keywords.

    Each option with a flag is read from *values* (click's, ``None`` or an
    empty tuple when not given) and parsed (:attr:`Option.parse`).

    Raises
    ------
    UsageError
        A value its parser refuses (``--chapters 3-1``, ``--pause x``...).
    """
    out = {}
    for name, opt in _OPTIONS.items():
        if opt.flags:
            value = values.get(name)
            out[name] = opt.parse(value) if opt.parse is not None else value
    return out


def split_options(
    output: str, given: Mapping[str, Any], *, caller: str = "convert"
) -> tuple[ConvertOptions, RunOptions]:
    """Options given as keywords → (:class:`ConvertOptions`, :class:`RunOptions`).

    Each value passes its option's check (:attr:`Option.coerce`).

    Raises
    ------
    TypeError
        A keyword that is no option (``<caller>() got an unexpected keyword
        argument 'x'``, as Python says it).
    UsageError
        A value its option refuses (e.g. an unknown pause kind).
    """
    book: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for name, value in given.items():
        opt = _OPTIONS.get(name)
        if opt is None:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
        if opt.coerce is not None:
            value = opt.coerce(value)
        (run if name in _RUN else book)[name] = value
    return ConvertOptions(output=output, **book), RunOptions(**run)


# -- texts -----------------------------------------------------------------------------------

_ROLE = re.compile(r":(\w+):`~?([^`<]*?)(?:\s*<([^>]*)>)?`")
_LITERAL = re.compile(r"``(.+?)``")


@functools.cache
def _shipped() -> dict[str, Any]:
    """The packaged defaults (:func:`ebook2audio_dask.config.defaults`), read once."""
    return config.defaults()


def _default_value(key: str) -> str | None:
    """The packaged value of ``ebook2audio.<key>`` as help shows it; ``None`` when empty.

    The shipped value, not this process's: the help and the docs read the same.
    """
    value = dask.config.get(key, None, config=_shipped())
    if value is None or value in ("", [], {}) or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _default_sentence(opt: Option) -> str:
    if opt.config:
        shown = _default_value(opt.config) or opt.default
        text = f"Default: ``ebook2audio.{opt.config}``"
        return text + (f" ({shown})." if shown else ".")
    if opt.default:
        return f"Default: {opt.default}."
    return ""


def _join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def api_help(name: str) -> str:
    """Option *name*'s documentation in :func:`~ebook2audio_dask.convert`'s docstring (rst)."""
    opt = _OPTIONS[name]
    default = f"Default: {opt.default_api}." if opt.default_api else _default_sentence(opt)
    text = _join(opt.help, opt.api, default)
    return re.sub(r":opt:`(\w+)`", r"*\1*", text)


def cli_help(name: str) -> str:
    """Option *name*'s ``--help`` text (plain text; flags instead of Python names)."""
    opt = _OPTIONS[name]
    text = _join(opt.help, opt.cli, _default_sentence(opt))

    def flag(match: re.Match) -> str:
        other = _OPTIONS[match.group(1)]
        return other.flag or other.name

    text = re.sub(r":opt:`(\w+)`", flag, text)
    text = _ROLE.sub(lambda m: (m.group(3) or m.group(2)).strip(), text)
    return _LITERAL.sub(r"\1", text)


def numpydoc_parameters(indent: str = "    ") -> str:
    """The ``Parameters`` entries of every option, in numpydoc form, each line indented."""
    lines = []
    for name, opt in _OPTIONS.items():
        lines.append(f"{indent}{name} : {opt.type}, optional")
        body = textwrap.wrap(
            api_help(name),
            width=88 - len(indent) - 4,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.extend(f"{indent}    {line}" for line in body)
    return "\n".join(lines)


def signature_parameters() -> list[inspect.Parameter]:
    """Every option as a keyword-only :class:`inspect.Parameter` (default ``None``)."""
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in _OPTIONS
    ]
