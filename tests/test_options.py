"""The options are defined once: convert(), the CLI and the docs agree with the definition."""

from __future__ import annotations

import dataclasses
import inspect
import re

import dask
import pytest

import ebook2audio_dask as e2a
from ebook2audio_dask.audio import FORMATS as OUTPUT_FORMATS
from ebook2audio_dask.cli.main import cli
from ebook2audio_dask.errors import UsageError
from ebook2audio_dask.pipeline.options import (
    ConvertOptions,
    RunOptions,
    cli_help,
    options,
    parse_flags,
    split_options,
)

#: Every keyword convert() took before its options were defined in one place.
KEYWORDS_BEFORE = {
    "engine", "voice", "model", "language", "chapters", "include_matter", "cache", "client",
    "scheduler", "n_workers", "gpus", "memory_limit", "slots_per_gpu", "adapt", "slurm", "slots",
    "storage_options", "output_storage_options", "cache_storage_options", "settings",
    "batch_chars", "engine_threads", "retries", "allow_gaps", "format", "split", "split_hours",
    "loudnorm", "subtitles", "pauses", "normalize", "lexicons", "progress", "progress_total",
    "on_job", "on_result", "priority", "bars",
}  # fmt: skip

#: The convert command's flags that are not options: how a command line reaches them.
CLI_ONLY = {
    "inputs", "output", "endpoints", "tls_ca_file", "tls_cert", "tls_key", "tls", "storage_json",
    "s3_endpoint", "no_progress", "debug", "help",
}  # fmt: skip

CONVERT = cli.commands["convert"]


def documented_parameters(doc: str) -> list[str]:
    """Names of the entries of a numpydoc ``Parameters`` section."""
    section = doc.split("Parameters\n----------\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^(\w+) : ", section, flags=re.MULTILINE)


def test_every_option_is_a_convert_keyword_documented_once():
    opts = options()
    params = inspect.signature(e2a.convert).parameters
    assert set(opts) <= set(params)
    assert set(params) >= KEYWORDS_BEFORE, KEYWORDS_BEFORE - set(params)
    for name in opts:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default is None
    documented = documented_parameters(inspect.getdoc(e2a.convert))
    assert sorted(documented) == sorted(set(documented)), "a parameter documented twice"
    assert set(params) == set(documented), set(params) ^ set(documented)


def test_every_flag_is_an_option_or_says_how_the_command_line_reaches_one():
    params = {p.name: p for p in CONVERT.params}
    for name, opt in options().items():
        if not opt.flags:
            continue
        assert name in params, f"option {name} has no --flag"
        param = params[name]
        assert param.opts[0] == opt.flag
        assert param.help == cli_help(name)
        assert param.multiple == opt.multiple
    derived = {name for name, opt in options().items() if opt.flags}
    assert set(params) - derived == CLI_ONLY - {"help"}


def test_cli_help_is_plain_text_and_every_option_has_some():
    for name, opt in options().items():
        text = cli_help(name)
        assert text.strip(), name
        assert "``" not in text and ":opt:" not in text and ":func:" not in text, (name, text)
        if opt.config:  # the config key giving the default exists in the packaged YAML
            dask.config.get(f"ebook2audio.{opt.config}")
            assert f"ebook2audio.{opt.config}" in text


def test_dataclass_fields_are_the_options():
    by_class = {
        ConvertOptions: {f.name for f in dataclasses.fields(ConvertOptions)}
        - {"output", "resources"},
        RunOptions: {f.name for f in dataclasses.fields(RunOptions)},
    }
    assert by_class[ConvertOptions] | by_class[RunOptions] == set(options())
    assert not by_class[ConvertOptions] & by_class[RunOptions]
    # dicts and credentials stay out of the hash / repr, as before
    fields = {f.name: f for f in dataclasses.fields(ConvertOptions)}
    assert not fields["storage_options"].repr and not fields["storage_options"].hash
    assert fields["settings"].hash is False and fields["pauses"].compare is False
    hash(ConvertOptions(output="x", settings={"a": 1}, pauses={"chapter": 1.0}))


def test_unknown_keyword_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(
        TypeError, match="convert\\(\\) got an unexpected keyword argument 'voices'"
    ):
        e2a.convert(str(tmp_path / "book.epub"), str(tmp_path / "out"), voices=["x"])
    with pytest.raises(TypeError, match="'nope'"):
        split_options("out", {"nope": 1})


def test_python_values_are_checked_and_normalised():
    book, run = split_options(
        "out",
        {"chapters": 3, "lexicons": "a.yaml", "pauses": {"chapter": "2"}, "priority": "b.epub"},
    )
    assert book.chapters == (3,) and book.lexicons == ("a.yaml",)
    assert book.pauses == {"chapter": 2.0} and run.priority == ("b.epub",)
    for bad in ({"verse": 1}, {"title": -1}, {"title": "x"}):
        with pytest.raises(UsageError):
            split_options("out", {"pauses": bad})


def test_command_line_values_become_convert_keywords():
    args = ["book.epub", "-o", "out", "--voice", "a.wav", "--voice", "b.wav", "--chapters", "1-3,7",
            "--pause", "chapter=3", "--setting", "length_scale=1.1", "--adapt", "0:2",
            "--lexicon", "x.yaml", "--no-normalize", "--format", "mp3", "--workers", "2",
            "--cluster", "local", "--allow-gaps", "--priority", "b.epub"]  # fmt: skip
    ctx = CONVERT.make_context("convert", args)
    given = parse_flags(ctx.params)
    assert given["voice"] == "a.wav|b.wav"
    assert given["chapters"] == (range(1, 4), 7)
    assert given["pauses"] == {"chapter": 3.0} and given["settings"] == {"length_scale": 1.1}
    assert given["adapt"] == (0, 2) and given["lexicons"] == ("x.yaml",)
    assert given["normalize"] is False and given["format"] == "mp3" and given["n_workers"] == 2
    assert given["cluster"] == "local" and given["allow_gaps"] is True
    assert given["priority"] == ("b.epub",)
    # nothing given: every option is None (its config default), --gpus the cluster's own default
    bare = parse_flags(CONVERT.make_context("convert", ["book.epub", "-o", "out"]).params)
    assert {k: v for k, v in bare.items() if v is not None} == {"gpus": "default"}
    with pytest.raises(UsageError, match="bad --adapt"):
        parse_flags(CONVERT.make_context("convert", ["b", "-o", "o", "--adapt", "x"]).params)


def test_format_choices_come_from_the_audio_formats_table():
    fmt = next(p for p in CONVERT.params if p.name == "format")
    assert list(fmt.type.choices) == list(OUTPUT_FORMATS)


def test_top_level_help_names_every_input_format():
    from ebook2audio_dask.ingest import FORMATS

    shown = {"md": "Markdown"}
    for name in FORMATS:
        assert shown.get(name, name.upper()) in cli.help, name
