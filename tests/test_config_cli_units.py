"""Config namespace and small CLI helpers."""

from __future__ import annotations

import subprocess
import sys

import dask
import pytest

from ebook2audio_dask import config
from ebook2audio_dask.cli import parse_chapters
from ebook2audio_dask.errors import UsageError


def test_defaults_loaded_under_namespace():
    assert dask.config.get("ebook2audio.synthesize.resources") == {"GPU": 1}
    assert config.get("pauses.chapter") > config.get("pauses.paragraph")
    assert config.get("cache", override="s3://x/y") == "s3://x/y"


def test_env_var_overrides_key_in_a_new_process():
    code = "import ebook2audio_dask.config as c; print(c.get('synthesize.batch-chars'))"
    env = {"DASK_EBOOK2AUDIO__SYNTHESIZE__BATCH_CHARS": "1234", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1234"


def test_parse_chapters():
    assert parse_chapters("1-3,7") == (range(1, 4), 7)  # ranges stay ranges
    assert parse_chapters(" 2 , 2,4-4") == (2, 4)
    assert parse_chapters(None) is None
    assert parse_chapters("a") == ("a",)  # a title (see test_chapter_selection.py)
    for bad in ("3-1", "0", "-2", "1--2"):
        with pytest.raises(UsageError):
            parse_chapters(bad)
