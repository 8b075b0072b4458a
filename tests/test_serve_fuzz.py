"""API fuzzing of a real ``ebook2audio serve`` process from its own OpenAPI description.

schemathesis reads ``/openapi.json`` from the running server (tests/serve_helpers.ServerProcess,
with a token) and generates requests for every operation, valid and invalid ones, a bounded
number per operation (hypothesis, no deadline), each operation's failure listed.  Every request
carries the token in an ``Authorization`` header, which also satisfies the server's CSRF check.
Each response must:

* not be a server error (5xx);
* conform to the operation's description: a documented status code, the documented content
  type, a body valid against the response schema, the documented headers.

The two event streams (``/api/events``, ``/api/jobs/{id}/events``) never end on their own:
for them only the status and the content type of the start of the answer are checked.

The server runs with its own ``$HOME`` and ``$TMPDIR``; after the run, nothing may have been
written outside its data folder: not in that ``$HOME`` or ``$TMPDIR`` (beyond Dask's worker
scratch space), not next to the data folder, not in the repository it runs in.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import ROOT, ServerProcess

TOKEN = "fuzz-test-token-0123456789abcdef"
#: Generated cases per operation: the whole module stays under about two minutes.
EXAMPLES = 12
#: Operations that answer with a server-sent event stream.
STREAMS = {"/api/events", "/api/jobs/{job_id}/events"}
#: What every answer is checked for (schemathesis's other checks, e.g. whether a schema-valid
#: request is accepted, judge the API's design rather than its answers).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: Folders of the repository the server runs in whose entries are compared before and after.
REPO_DIRS = (ROOT, ROOT / "tests", ROOT / "examples", ROOT / "ebook2audio_dask")


def entries(folder: Path, recursive: bool, skip: tuple[str, ...] = ()) -> set[str]:
    """Relative names under *folder* (all levels when *recursive*), minus *skip* prefixes."""
    if not folder.is_dir():
        return set()
    found = folder.rglob("*") if recursive else folder.iterdir()
    names = {str(p.relative_to(folder)) for p in found}
    parents = {s.rsplit("/", 1)[0] for s in skip if "/" in s}  # a skipped path's own folders
    return {
        n for n in names if not n.startswith(skip) and n not in parents and "__pycache__" not in n
    }


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    home, tmp = base / "home", base / "tmp"
    home.mkdir()
    tmp.mkdir()
    proc = ServerProcess(base / "data", token=TOKEN, env={"HOME": str(home), "TMPDIR": str(tmp)})
    proc.start()
    proc.fuzz_home, proc.fuzz_tmp = home, tmp
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(
        fuzz_server.url + "/openapi.json", headers=fuzz_server.headers, timeout=30
    )


@pytest.fixture(scope="module")
def outside_snapshot(fuzz_server):
    """What exists outside the data folder once the server is up; checked after every op."""

    def take() -> dict[str, set[str]]:
        base = fuzz_server.data.parent
        own = (fuzz_server.data.name, fuzz_server.log_path.name, "home", "tmp")
        return {
            "next to the data folder": entries(base, True, own),
            # onnxruntime (loaded by Piper and Kokoro, e.g. for GET /api/engines) keeps its
            # telemetry device id in ~/.cache/Microsoft/ and its session in $TMPDIR/.ses
            "its $HOME": entries(fuzz_server.fuzz_home, True, (".cache/Microsoft",)),
            # Dask's worker scratch space is the workers' own (spilled data, locks)
            "its $TMPDIR": entries(fuzz_server.fuzz_tmp, False, ("dask-scratch-space", ".ses")),
            **{f"the repository ({d.name}/)": entries(d, False) for d in REPO_DIRS},
        }

    return take(), take


def describe(exc: BaseException) -> str:
    """*exc*'s text with its sub-exceptions' (hypothesis and schemathesis group them)."""
    text = str(exc).strip()
    for sub in getattr(exc, "exceptions", ()):
        text += "\n" + describe(sub)
    return text


def check_case(case, server, outside_snapshot) -> None:
    """Send *case* with the token; its answer checked (see the module docstring)."""
    if case.operation.path in STREAMS:
        response = case.call(headers=server.headers, stream=True, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code == 200:
            assert response.headers["content-type"][0].startswith("text/event-stream")
    else:
        case.call_and_validate(headers=server.headers, timeout=120, checks=CHECKS)
    seen, take = outside_snapshot
    now = take()
    new = {where: sorted(names - seen[where]) for where, names in now.items()}
    seen.update(now)  # each new file is reported once, by the operation that wrote it
    for where, names in new.items():
        assert not names, (
            f"{case.operation.label} wrote outside the data folder, in {where}: {names}"
        )


@pytest.mark.slow
def test_every_operation_answers_within_its_description(api_schema, fuzz_server, outside_snapshot):
    """Every operation of /openapi.json, valid and invalid requests; all failures listed."""
    failures: list[str] = []
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                check_case(case, fuzz_server, outside_snapshot)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing of this operation can be made invalid (no parameter, no body)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001, F821 - each one listed
                text = describe(exc)
                failures.append(f"{operation.label} ({mode.value}): {text[:1500]}")
    assert len(labels) >= 20, f"too few operations in /openapi.json: {labels}"
    assert not failures, f"{len(failures)} failing operation(s):\n\n" + "\n\n".join(failures)


def test_the_fuzzed_server_is_still_healthy(fuzz_server):
    with fuzz_server.client() as client:
        assert client.get("/healthz").json()["ok"] is True
        assert client.get("/api/jobs").status_code == 200
    assert os.path.isfile(fuzz_server.data / "queue.sqlite3")
