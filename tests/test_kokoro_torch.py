"""Kokoro's torch path (``engines/kokoro_torch.py``): one padded forward pass per length bucket.

The model is a small random ``KModel`` built from kokoro's own classes
(``tests/kokoro_models.py``): the real architecture, with a small ALBERT and
fewer layers, saved as hexgrad/Kokoro-82M ships its ``.pth`` and loaded back
through :class:`TorchKokoro`.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("kokoro") is None:  # its __init__ needs misaki: not imported here
    pytest.skip(
        "the kokoro package is part of the dev install (.ci/install-dev.sh)",
        allow_module_level=True,
    )

from distributed import Client, LocalCluster  # noqa: E402
from distributed.utils_test import gen_cluster  # noqa: E402
from kokoro_models import build_kokoro  # noqa: E402

from ebook2audio_dask.engines import kokoro_torch  # noqa: E402
from ebook2audio_dask.engines.kokoro_torch import LOADS, TorchKokoro, kmodel_class  # noqa: E402
from ebook2audio_dask.errors import EngineError  # noqa: E402

#: Token counts of the texts: a word to a long sentence.
LENGTHS = (3, 9, 14, 22, 31, 44)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[str, dict]:
    path, config = build_kokoro(tmp_path_factory.mktemp("kokoro"), "tiny", seed=1)
    return str(path), config


@pytest.fixture(scope="module")
def kokoro(model) -> TorchKokoro:
    tk = TorchKokoro(*model, device="cpu", threads=1)
    tk.spread = 100.0  # every text in one bucket: the batch mixes a 3-token and a 44-token text
    return tk


def _texts(seed: int = 0, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(1, 50, n).tolist() for n in lengths]
    styles = [(rng.standard_normal(256) * 0.3).astype(np.float32) for _ in lengths]
    return tokens, styles


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_batched_forward_speaks_as_one_at_a_time(kokoro, monkeypatch):
    tokens, styles = _texts()
    passes = []
    forward = kokoro._forward
    monkeypatch.setattr(
        kokoro, "_forward", lambda ids, *a: passes.append(len(ids)) or forward(ids, *a)
    )
    alone = kokoro.speak_detailed(tokens, styles, 1.0, batch_size=1)
    assert passes == [1] * len(LENGTHS)
    passes.clear()
    batched = kokoro.speak_detailed(tokens, styles, 1.0, batch_size=len(LENGTHS))
    assert passes == [len(LENGTHS)]  # one forward pass for all six texts
    for n, ((a, dur_a), (b, dur_b)) in zip(LENGTHS, zip(alone, batched)):
        assert len(dur_a) == len(dur_b) == n + 2  # the two pad tokens included
        assert np.abs(dur_a - dur_b).max() <= 1
        assert a.dtype == b.dtype == np.float32 and np.isfinite(a).all() and np.isfinite(b).all()
        assert len(a) == 600 * int(dur_a.sum()) and len(b) == 600 * int(dur_b.sum())  # 25 ms frames
        # the issue asks for >= 0.99; with every mask in place only float rounding is left
        assert _corr(a, b) >= 0.99 and 1 - _corr(a, b) < 1e-10
    # speak() is the same audio, in the caller's order (batch size 1 on the CPU)
    assert kokoro.batch_size == 1
    for (a, _), c in zip(alone, kokoro.speak(tokens, styles, 1.0)):
        assert np.array_equal(a, c)


def test_same_text_same_audio_and_speed_shortens(kokoro):
    tokens, styles = _texts(1, (12, 12))
    first, again = kokoro.speak([tokens[0], tokens[0]], [styles[0], styles[0]], 1.0)
    assert np.array_equal(first, again)  # noise seeded by the tokens
    other = kokoro.speak([tokens[1]], [styles[0]], 1.0)[0]
    assert _corr(first, other) < 0.9
    fast = kokoro.speak([tokens[0]], [styles[0]], 2.0)[0]
    assert len(fast) < len(first)


def test_forward_is_kmodels_forward(model, monkeypatch):
    """The same modules as ``KModel.forward_with_tokens``, the same audio (in float64, noise
    off)."""
    KModel = kmodel_class()
    path, config = model
    upstream = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=path).eval().double()
    ours = TorchKokoro(path, config, device="cpu")
    ours.model.double()
    # the harmonic source's noise is the one random draw: off on both sides
    monkeypatch.setattr(torch, "randn_like", lambda t, *a, **k: torch.zeros_like(t))
    monkeypatch.setattr(
        ours,
        "_row_noise",
        lambda seeds, samples, dim, width, dtype: (
            torch.zeros((len(seeds), dim), dtype=dtype),
            torch.zeros((len(seeds), width, dim), dtype=dtype),
        ),
    )
    tokens, styles = _texts(2, (5, 17, 30))
    for ids, style in zip(tokens, styles):
        torch.set_default_dtype(
            torch.float64
        )  # kokoro's modules make some tensors in the default dtype
        try:
            with torch.no_grad():
                audio, dur = upstream.forward_with_tokens(
                    torch.tensor([[0, *ids, 0]]),
                    torch.as_tensor(style, dtype=torch.float64)[None],
                    1.0,
                )
            [(mine, mine_dur)] = ours.speak_detailed([ids], [style], 1.0)
        finally:
            torch.set_default_dtype(torch.float32)
        assert np.array_equal(dur.numpy(), mine_dur)
        expected = audio.numpy()
        assert mine.shape == expected.shape
        assert np.abs(mine - expected).max() <= 1e-5 * np.abs(expected).max()


def test_buckets_bound_padding():
    tk = TorchKokoro.__new__(TorchKokoro)
    tk.batch_size, tk.spread, tk.max_batch_tokens = 4, 1.3, 100
    lengths = [50, 10, 12, 11, 40, 45, 13, 90, 30]
    groups = tk.buckets(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert sizes == sorted(sizes) and len(group) <= 4
        assert max(sizes) <= 1.3 * max(sizes[0], 16)
        assert len(group) == 1 or len(group) * max(sizes) <= 100
    assert tk.buckets(lengths, batch_size=1) == [
        [i] for i in sorted(range(9), key=lambda i: lengths[i])
    ]


def test_errors_are_one_line(tmp_path, model):
    path, config = model
    with pytest.raises(EngineError, match=r"^kokoro model unreadable: .*missing\.pth"):
        TorchKokoro(str(tmp_path / "missing.pth"), config, device="cpu")
    broken = {k: v for k, v in config.items() if k != "istftnet"}
    with pytest.raises(EngineError, match=r"^kokoro config has no 'istftnet'"):
        TorchKokoro(path, broken, device="cpu")
    tk = TorchKokoro(path, config, device="cpu")
    with pytest.raises(EngineError, match=r"too long: 511 tokens \(the model takes 510\)"):
        tk.speak([[1] * 511], [np.zeros(256, np.float32)], 1.0)
    tk.close()
    with pytest.raises(EngineError, match="closed"):
        tk.speak([[1]], [np.zeros(256, np.float32)], 1.0)


def test_threads_share_one_model(model):
    """Two threads speak through one shared instance at once: same audio as alone, one load."""
    path, config = model
    key = (path, "cpu")
    before = LOADS[key]
    shared = TorchKokoro.shared(path, config, device="cpu")
    assert TorchKokoro.shared(path, config, device="cpu") is shared
    assert LOADS[key] == before + 1
    tokens, styles = _texts(3, (8, 20, 15, 26))
    expected = shared.speak(tokens, styles, 1.0)
    results: dict[int, list] = {}
    barrier = threading.Barrier(2)

    def speak(k: int) -> None:
        barrier.wait()
        results[k] = shared.speak(tokens[k::2], styles[k::2], 1.0)

    threads = [threading.Thread(target=speak, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        for got, want in zip(results[k], expected[k::2]):
            assert np.array_equal(got, want)
    shared.close()  # one of its two users: still loaded
    assert shared.model is not None and TorchKokoro.shared(path, config, device="cpu") is shared
    shared.close()
    shared.close()  # the last user: released
    assert shared.model is None
    again = TorchKokoro.shared(path, config, device="cpu")
    assert again is not shared and LOADS[key] == before + 2  # closed: loaded again
    again.close()


# --------------------------------------------------------------------------- on a cluster
def _speak_task(path: str, config: dict, tokens, style) -> tuple[str, int, int, int]:
    """A synthesize-like task: this process's shared model speaks one text."""
    from distributed import get_worker

    tk = kokoro_torch.TorchKokoro.shared(path, config, device="cpu")
    [audio] = tk.speak([tokens], [style], 1.0)
    return get_worker().address, os.getpid(), kokoro_torch.LOADS[(path, "cpu")], len(audio)


@gen_cluster(
    client=True,
    nthreads=[
        ("127.0.0.1", 2, {"resources": {"GPU": 2}}),
        ("127.0.0.1", 1, {"resources": {"GPU": 1}}),
        ("127.0.0.1", 2),  # no resources: must get none of the tasks
    ],
    timeout=120,
)
async def test_tasks_needing_a_gpu_land_only_on_gpu_workers(c, s, gpu_a, gpu_b, cpu, model):
    path, config = model
    before = LOADS[(path, "cpu")]
    tokens, styles = _texts(4, (6, 10, 14, 18, 7, 11, 15, 19))
    futures = [
        c.submit(_speak_task, path, config, t, st, resources={"GPU": 1}, pure=False)
        for t, st in zip(tokens, styles)
    ]
    results = await c.gather(futures)
    where = {address for address, *_ in results}
    assert where <= {gpu_a.address, gpu_b.address} and cpu.address not in where
    assert all(n > 0 for *_, n in results)
    # the workers' own logs agree: the CPU-only worker computed none of them
    computed = {
        str(e[0])
        for w in (gpu_a, gpu_b, cpu)
        for e in w.state.log
        if len(e) > 1 and e[1] == "compute-task" and w is not cpu
    }
    assert {f.key for f in futures} <= computed
    assert not any(len(e) > 1 and e[1] == "compute-task" for e in cpu.state.log)
    # the workers share this process: the model was loaded once for all of them
    assert {loads for _, _, loads, _ in results} == {before + 1}
    shared = kokoro_torch.TorchKokoro.shared(path, config, device="cpu")
    while shared.model is not None:  # one close per user (each task called shared())
        shared.close()


def test_one_load_per_worker_process(model):
    """Two worker processes with two slots each: every process loads the model once."""
    path, config = model
    tokens, styles = _texts(5, (5, 9, 13, 17, 6, 10, 14, 18))
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            resources={"GPU": 2},
            dashboard_address=None,
            host="127.0.0.1",
            silence_logs=50,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        futures = [
            client.submit(_speak_task, path, config, t, st, resources={"GPU": 1}, pure=False)
            for t, st in zip(tokens, styles)
        ]
        results = client.gather(futures)
        loads = client.run(lambda: dict(kokoro_torch.LOADS))
    pids = {pid for _, pid, _, _ in results}
    assert pids and os.getpid() not in pids
    assert all(counts == {(path, "cpu"): 1} for counts in loads.values() if counts)
    assert len([c for c in loads.values() if c]) == len(pids)
    assert all(n > 0 for *_, n in results)


def test_the_kokoro_engine_speaks_a_pth_model_and_its_voices_share_one_load(tmp_path):
    """``--engine kokoro`` with a hexgrad-style folder (.pth, config.json, voices/*.pt) on this
    backend."""
    from ebook2audio_dask.engines.kokoro import KokoroEngine

    path, config = build_kokoro(tmp_path / "Kokoro-82M", "tiny", seed=2)
    (tmp_path / "Kokoro-82M" / "voices").mkdir()
    for name, seed in (("af_one", 0), ("bf_two", 1)):
        generator = torch.Generator().manual_seed(seed)
        torch.save(torch.randn((510, 1, 256), generator=generator) * 0.2,
                   tmp_path / "Kokoro-82M" / "voices" / f"{name}.pt")  # fmt: skip
    key = (str(path), "cpu")
    before = LOADS[key]
    one = KokoroEngine(
        "af_one", {"language": "en"}, model=str(tmp_path / "Kokoro-82M"), device="cpu"
    )
    two = KokoroEngine(
        "bf_two", {"language": "en"}, model=str(tmp_path / "Kokoro-82M"), device="cpu"
    )
    assert (
        LOADS[key] == before + 1 and one.runtime is two.runtime
    )  # two voices, one model in memory
    texts = ["It was the best of times.", "It was the worst of times, it was the age of wisdom."]
    a, b = one.synthesize(texts), two.synthesize(texts)
    assert [x.dtype.name for x in a + b] == ["int16"] * 4 and all(len(x) > 2400 for x in a + b)
    assert len(a[1]) > len(a[0])
    one.close()
    assert two.runtime.model is not None  # still speaking for the other voice
    two.close()
