"""Values left ``None`` are read from the config when the object is made (on the client).

``Pauses`` and ``OutputSpec`` hold no defaults of their own: the packaged
``ebook2audio.yaml`` is the one default, and a value resolved on the client
travels to the workers inside the object (a ``dask.config.set`` there need not
reach the workers of an external cluster).
"""

from __future__ import annotations

import pickle

import dask.config
import pytest

from ebook2audio_dask import config
from ebook2audio_dask.audio.formats import OutputSpec
from ebook2audio_dask.text import Pauses

KINDS = ("sentence", "paragraph", "title", "chapter")


def test_pauses_left_unset_are_the_configured_ones():
    conf = config.get("pauses")
    assert Pauses() == Pauses.from_config() == Pauses(**{k: float(conf[k]) for k in KINDS})
    with dask.config.set({"ebook2audio.pauses.title": 3.5}):
        pauses = Pauses(sentence=0.1)
    assert pauses.sentence == 0.1 and pauses.title == 3.5
    assert pauses.paragraph == float(conf["paragraph"])
    assert pauses.chapter == float(conf["chapter"])


def test_output_spec_reads_bitrate_and_keep_encoded_where_it_is_made():
    assert OutputSpec().bitrate == str(config.get("merge.bitrate"))
    assert OutputSpec().keep_encoded is bool(config.get("merge.keep-encoded"))
    settings = {"ebook2audio.merge.bitrate": "96k", "ebook2audio.merge.keep-encoded": False}
    with dask.config.set(settings):
        spec = OutputSpec.resolve(format="mp3")
    assert spec.bitrate == "96k" and spec.keep_encoded is False
    # what the client resolved is what a worker gets, whatever the worker's config says
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert OutputSpec(bitrate="32k", keep_encoded=True).bitrate == "32k"


def test_a_section_replaced_without_a_key_is_a_one_line_usage_error():
    """A user setting that replaces a whole section with fewer keys names the missing key."""

    from ebook2audio_dask.audio import Loudness
    from ebook2audio_dask.errors import EXIT_USAGE, UsageError

    with dask.config.set({"ebook2audio.output.loudness": {"integrated": -18}}):
        with pytest.raises(UsageError) as info:
            Loudness.from_config()
    assert "ebook2audio.output.loudness.true-peak is not set" in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == EXIT_USAGE


def test_the_clients_ingest_limits_reach_workers_that_read_their_own_config(client, tmp_path):
    """A worker reads its own configuration; the parse task brings the client's ingest limits.

    The module's cluster started before this ``dask.config.set``, so its worker
    processes still have the packaged 512MiB: only the value sent with the
    task can make the book fail.
    """
    from helpers import ROOT

    from ebook2audio_dask import convert

    book = ROOT / "examples" / "childrens-literature.epub"
    with dask.config.set({"ebook2audio.ingest.max-file-size": 4096}):
        [result] = convert(
            str(book), str(tmp_path / "out"), client=client, engine="espeak",
            cache=str(tmp_path / "chunks"), chapters=[2], progress=False,
        )  # fmt: skip
    assert not result.ok
    assert "ingest.max-file-size" in result.error
    seen = client.run(lambda: dask.config.get("ebook2audio.ingest.max-file-size"))
    assert set(seen.values()) == {"512MiB"}  # the workers' own config, untouched
    assert not (tmp_path / "out" / "childrens-literature.m4b").exists()


def test_settings_sent_with_a_task_stay_in_its_thread():
    """``applied`` is per thread: tasks side by side on one worker never see each other's."""
    import threading

    seen = {}
    barrier = threading.Barrier(2)

    def task(name, limit):
        with config.applied({"ingest": {"max-text-size": limit}}):
            barrier.wait()
            seen[name] = config.get("ingest.max-text-size")
            barrier.wait()

    threads = [threading.Thread(target=task, args=(n, v)) for n, v in (("a", 1), ("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": 1, "b": 2}
    assert config.get("ingest.max-text-size") == config.defaults()["ingest"]["max-text-size"]
    assert config.snapshot("ingest", exclude=("calibre",))["ingest"].get("calibre") is None
