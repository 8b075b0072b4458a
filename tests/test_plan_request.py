"""The chunk stage's request: the packaged configuration is its only default (fast)."""

from __future__ import annotations

import dask.config

from ebook2audio_dask import config
from ebook2audio_dask.pipeline.tasks import PlanRequest
from ebook2audio_dask.text.chunk import Pauses


def test_plan_request_defaults_are_the_configs_read_when_it_is_made():
    request = PlanRequest()
    assert request.routing == tuple(config.get("routing"))
    assert request.fallback_language == config.get("fallback-language")
    assert request.pauses == Pauses.from_config()
    assert request.speak_titles is True
    assert request.max_chars is None  # the engine's own limit
    assert request.normalize == ("numbers", "abbreviations", "roman")
    assert request.sentences is False
    with dask.config.set(
        {
            "ebook2audio.routing": ["espeak"],
            "ebook2audio.fallback-language": "fr",
            "ebook2audio.pauses.chapter": 3.0,
            "ebook2audio.chunk.speak-titles": False,
            "ebook2audio.text.normalize": False,
        }
    ):
        changed = PlanRequest()
        explicit = PlanRequest(routing=("piper",), fallback_language="nl", normalize=("numbers",))
    assert changed.routing == ("espeak",) and changed.fallback_language == "fr"
    assert changed.pauses.chapter == 3.0 and changed.speak_titles is False
    assert changed.normalize == ()
    assert explicit.routing == ("piper",) and explicit.fallback_language == "nl"
    assert explicit.normalize == ("numbers",)
    # resolved when made (on the client): a later change of the configuration does not reach it
    assert PlanRequest().routing == request.routing != changed.routing
