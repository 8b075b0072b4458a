"""Kokoro-82M on torch, with a real batched forward pass.

Upstream ``kokoro.KModel.forward_with_tokens`` speaks one text per call: its
input lengths are the tensor's width, its LSTMs run unpacked and its
decoder's instance norms, convolutions and STFTs see the whole tensor.  The
forward here runs the same modules (their weights, loaded by ``KModel`` from
the ``.pth`` file hexgrad/Kokoro-82M ships) on a padded batch of texts, with
everything that would let padding leak into a text's audio made per text:

* token side: ALBERT with an attention mask, every LSTM on a packed sequence
  (``pack_padded_sequence``), durations of padding tokens set to zero;
* alignment: one ``[batch, tokens, frames]`` matrix from the per-text
  durations (frames past a text's end are all zero);
* frame side: every instance norm (``AdaIN1d``) takes its mean and variance
  over the text's own frames only, and every convolution sees zeros past a
  text's end, exactly the zero padding it sees when the text is alone;
* the harmonic source: its phase stops at each text's end (the same value
  ``F.interpolate`` clamps to for a lone text), and its noise comes from a
  generator seeded by the text's tokens (same text, same audio, in any batch).

Two small operations run one text at a time, inside the batched pass, because
they cannot batch exactly: the STFT of the harmonic source and the inverse STFT
of the output (``center=True`` reflect-pads at each text's own end, and the
overlap-add's window normalisation near the end depends on how many frames
follow; both are cheap next to the convolutions).  Batched and one-at-a-time
speech then agree: same durations, waveform correlation ~1 (see
``tests/test_kokoro_torch.py``).

Only ``kokoro.model`` (``KModel``, its modules and istftnet) is needed; the
package's ``__init__`` also imports ``KPipeline`` and with it misaki's English
G2P (spaCy).  When ``kokoro`` is not already imported whole, its submodules
are imported under a bare ``kokoro`` package whose ``__init__`` is not run (it
only configures loguru and imports ``KPipeline``): so ``pip install --no-deps
kokoro loguru`` is enough here, and misaki stays optional.

Thread safety: :meth:`TorchKokoro.speak` only reads the model (weight norm is
folded into the weights once, at load), so several threads of a worker may
call it at once (``--slots-per-gpu``); on CUDA each thread gets its own stream,
so their kernels can overlap on the GPU.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import math
import sys
import threading
import types
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import EngineError, one_line
from ..logs import get_logger

__all__ = ["LOADS", "SAMPLE_RATE", "TorchKokoro", "kmodel_class", "pick_device"]

_LOGGER = get_logger(__name__)

#: Kokoro speaks 24 kHz mono.
SAMPLE_RATE = 24000
#: Model loads by this process, per (model path, device): 1 unless closed in between.
LOADS: Counter[tuple[str, str]] = Counter()
_SHARED: dict[tuple[str, str, str, int], TorchKokoro] = {}
_SHARED_LOCK = threading.Lock()


def kmodel_class() -> type:
    """``kokoro.model.KModel``, imported without running ``kokoro/__init__.py``.

    Raises
    ------
    EngineError
        The ``kokoro`` package is not installed.
    """
    loaded = sys.modules.get("kokoro.model")
    if loaded is not None:
        return loaded.KModel
    package = sys.modules.get("kokoro")
    if package is not None and hasattr(package, "KModel"):
        return package.KModel
    spec = importlib.util.find_spec("kokoro")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the kokoro torch path needs the kokoro package: pip install --no-deps kokoro loguru"
        )
    bare = types.ModuleType("kokoro")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    bare.__file__ = spec.origin
    sys.modules["kokoro"] = bare
    try:
        from loguru import logger

        logger.disable("kokoro")  # what kokoro/__init__.py does
        return importlib.import_module("kokoro.model").KModel
    except ImportError as exc:
        raise EngineError(f"kokoro.model cannot be imported: {one_line(exc)}") from None
    finally:
        # The submodules stay imported; a later ``import kokoro`` runs the real __init__.
        if sys.modules.get("kokoro") is bare:
            del sys.modules["kokoro"]


def pick_device(wanted: str = "auto") -> str:
    """``"auto"``: ``cuda`` when torch sees a GPU, then ``mps``, else ``cpu``."""
    import torch

    wanted = (wanted or "auto").lower()
    if wanted != "auto":
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _fold_weight_norm(model) -> None:
    """Replace every weight-normed parameter pair by its weight (same values).

    ``torch.nn.utils.weight_norm`` recomputes and *assigns* ``module.weight``
    before every call; folded, a forward pass only reads the model (safe from
    several threads) and skips that work.
    """
    import torch

    for module in model.modules():
        with contextlib.suppress(ValueError):
            torch.nn.utils.remove_weight_norm(module)


def _token_seed(ids: Sequence[int]) -> int:
    """Seed of a text's noise: a checksum of its token ids."""
    return zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes())


class TorchKokoro:
    """A Kokoro ``KModel`` that speaks length buckets of texts in one forward pass.

    Parameters
    ----------
    model_path : str
        Local ``.pth`` state dict as hexgrad/Kokoro-82M ships it
        (``kokoro-v1_0.pth``: ``{"bert": ..., "predictor": ..., ...}``).
    config : dict
        The model's ``config.json`` (``vocab``, ``n_token``, ``plbert``,
        ``istftnet``...).
    device : str
        ``"auto"`` (cuda, then mps, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    threads : int
        ``torch.set_num_threads`` on the CPU (process-wide).

    Attributes
    ----------
    batch_size : int
        Most texts in one forward pass: 32 on a GPU, 1 on the CPU (where a
        padded batch of conv-heavy vocoder work is no faster); halved on CUDA
        out-of-memory.
    max_batch_tokens : int
        Most padded tokens (texts x longest text) in one forward pass.
    spread : float
        A bucket ends where a text is longer than this times its first text.

    Raises
    ------
    EngineError
        kokoro missing, or the model file or config unusable.
    """

    def __init__(self, model_path: str, config: dict, device: str = "auto", threads: int = 1):
        import torch

        self.device = torch.device(pick_device(device))
        self.threads = max(1, int(threads))
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        self.model_path = str(model_path)
        KModel = kmodel_class()
        try:
            # MPS has no complex STFT: kokoro's conv-based STFT then (same numbers).
            model = KModel(
                repo_id="hexgrad/Kokoro-82M",
                config=dict(config),
                model=self.model_path,
                disable_complex=self.device.type == "mps",
            )
        except KeyError as exc:
            raise EngineError(f"kokoro config has no {exc}: {self.model_path}") from None
        except (OSError, RuntimeError, ValueError, AssertionError) as exc:
            raise EngineError(
                f"kokoro model unreadable: {self.model_path}: {one_line(exc)}"
            ) from None
        model.eval()
        _fold_weight_norm(model)
        self.model = model.to(self.device)
        if (
            self.device.type == "cuda"
        ):  # the weights are in place before any thread's stream reads them
            torch.cuda.synchronize(self.device)
        self.context_length = int(model.context_length)
        gen = model.decoder.generator
        self._rates = [int(u.stride[0]) for u in gen.ups]
        self._hop = int(gen.stft.hop_length)
        gpu = self.device.type != "cpu"
        self.batch_size = 32 if gpu else 1
        self.max_batch_tokens = 16384 if gpu else 4096
        self.spread = 1.3
        self._local = threading.local()
        self._users = 1  # close() releases the model when the last user closes it
        LOADS[(self.model_path, str(self.device))] += 1
        _LOGGER.info("kokoro: loaded %s on %s", self.model_path, self.device)

    @classmethod
    def shared(
        cls, model_path: str, config: dict, device: str = "auto", threads: int = 1
    ) -> TorchKokoro:
        """This process's instance for *model_path* on *device*, loaded on first use.

        Engines with different voices (or blends) of one model share its
        weights this way: one model load per process.  Each call counts a
        user; :meth:`close` releases the model when the last one closes it.
        """
        import json

        key = (
            str(model_path),
            json.dumps(config, sort_keys=True),
            pick_device(device),
            int(threads),
        )
        with _SHARED_LOCK:
            found = _SHARED.get(key)
            if found is None or found.model is None:
                found = _SHARED[key] = cls(model_path, config, device, threads)
            else:
                found._users += 1
            return found

    # -- batching -----------------------------------------------------------
    def buckets(self, lengths: Sequence[int], batch_size: int | None = None) -> list[list[int]]:
        """Indices of texts grouped by length, for one forward pass each.

        Like :func:`ebook2audio_dask.pipeline.tasks.length_buckets`: sorted by
        length, a bucket ends at :attr:`batch_size` texts, where a text is
        longer than :attr:`spread` times the bucket's first (so padding wastes
        little), or where the padded size would pass :attr:`max_batch_tokens`.
        """
        size = max(1, int(batch_size or self.batch_size))
        groups: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
            n = max(int(lengths[i]), 1)
            group = groups[-1] if groups else None
            if (
                group is None
                or len(group) >= size
                or n > self.spread * max(lengths[group[0]], 16)
                or (len(group) + 1) * n > self.max_batch_tokens
            ):
                groups.append([i])
            else:
                group.append(i)
        return groups

    # -- speaking -------------------------------------------------------------
    def speak(
        self, tokens: list[list[int]], styles: list[np.ndarray], speed: float
    ) -> list[np.ndarray]:
        """Speak each token sequence with its style vector.

        Parameters
        ----------
        tokens : list of list of int
            Vocab ids per text, without the 0 pad at either end.
        styles : list of numpy.ndarray
            A float32 ``[256]`` style per text (``ref_s``: the decoder's 128,
            then the predictor's 128).
        speed : float
            Durations are divided by it.

        Returns
        -------
        list of numpy.ndarray
            Float32 24 kHz mono audio per text, in order.
        """
        return [audio for audio, _ in self.speak_detailed(tokens, styles, speed)]

    def speak_detailed(
        self,
        tokens: list[list[int]],
        styles: list[np.ndarray],
        speed: float,
        batch_size: int | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`speak`, with each text's durations: ``(audio, frames per token)``.

        The durations include the two pad tokens; a frame is 600 samples.
        *batch_size* overrides :attr:`batch_size` (1: one text per pass).
        """
        import torch

        if self.model is None:
            raise EngineError("kokoro model was closed")
        if len(tokens) != len(styles):
            raise ValueError(f"{len(tokens)} token sequences but {len(styles)} styles")
        for ids in tokens:
            if len(ids) + 2 > self.context_length:
                raise EngineError(
                    f"kokoro text too long: {len(ids)} tokens "
                    f"(the model takes {self.context_length - 2})"
                )
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(tokens)
        todo = self.buckets([len(t) for t in tokens], batch_size)
        with torch.no_grad(), self._stream():
            while todo:
                group = todo.pop(0)
                try:
                    results = self._forward(
                        [list(tokens[i]) for i in group], [styles[i] for i in group], speed
                    )
                except torch.OutOfMemoryError:
                    if len(group) == 1:
                        raise
                    self.batch_size = max(1, len(group) // 2)
                    torch.cuda.empty_cache()
                    _LOGGER.warning("kokoro: out of GPU memory, batch size now %d", self.batch_size)
                    half = len(group) // 2
                    todo[:0] = [group[:half], group[half:]]
                    continue
                for i, result in zip(group, results):
                    out[i] = result
        return out  # type: ignore[return-value]

    def _stream(self):
        """A CUDA stream of this thread's own (threads' passes overlap on the GPU)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        import torch

        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(device=self.device)
        return torch.cuda.stream(stream)

    def _forward(
        self, ids: list[list[int]], styles: list[np.ndarray], speed: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """One padded forward pass over *ids*: ``(audio, durations)`` per text."""
        import torch

        m, dev = self.model, self.device
        lengths = torch.tensor([len(x) + 2 for x in ids], dtype=torch.long)
        width = int(lengths.max())
        input_ids = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, 1 : 1 + len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        input_ids = input_ids.to(dev)
        text_mask = (torch.arange(width)[None, :] >= lengths[:, None]).to(dev)  # True on padding
        dtype = m.bert_encoder.weight.dtype
        ref_s = torch.as_tensor(
            np.stack([np.asarray(s, dtype=np.float32).reshape(-1) for s in styles])
        )
        ref_s = ref_s.to(device=dev, dtype=dtype)
        s = ref_s[:, 128:]

        bert = m.bert(input_ids, attention_mask=(~text_mask).int())
        d_en = m.bert_encoder(bert).transpose(-1, -2)
        d = m.predictor.text_encoder(d_en, s, lengths, text_mask)
        x = _packed_lstm(m.predictor.lstm, d, lengths, width)
        duration = torch.sigmoid(m.predictor.duration_proj(x)).sum(dim=-1) / speed
        pred_dur = torch.round(duration).clamp(min=1).long().masked_fill(text_mask, 0)
        frames = pred_dur.sum(dim=1)
        n_frames = int(frames.max())
        # alignment[b, t, f] = 1 where frame f of text b speaks its token t
        ends = pred_dur.cumsum(dim=1)
        grid = torch.arange(n_frames, device=dev).expand(len(ids), n_frames).contiguous()
        token_of = torch.searchsorted(ends, grid, right=True)
        alignment = (token_of[:, None, :] == torch.arange(width, device=dev)[None, :, None]).to(
            dtype
        )

        en = d.transpose(-1, -2) @ alignment
        f0, noise = self._f0n(en, s, frames)
        t_en = m.text_encoder(input_ids, lengths, text_mask)
        asr = t_en @ alignment
        seeds = [_token_seed(x) for x in ids]
        audio = self._decode(asr, f0, noise, ref_s[:, :128], frames, seeds)
        durations = pred_dur.cpu().numpy()
        return [
            (wave.float().cpu().numpy(), durations[row, : int(lengths[row])])
            for row, wave in enumerate(audio)
        ]

    def _f0n(self, en, s, frames):
        """``ProsodyPredictor.F0Ntrain`` per text: packed LSTM, masked blocks."""
        p = self.model.predictor
        n = en.shape[-1]
        x = _packed_lstm(p.shared, en.transpose(-1, -2), frames.cpu(), n).transpose(-1, -2)
        mask = _mask(frames, n)
        f0, noise = x, x
        f0_mask = noise_mask = mask
        for block in p.F0:
            f0, f0_mask = _adain_blk(block, f0, s, f0_mask)
        for block in p.N:
            noise, noise_mask = _adain_blk(block, noise, s, noise_mask)
        return p.F0_proj(f0).squeeze(1), p.N_proj(noise).squeeze(1)

    def _decode(self, asr, f0_curve, n_curve, s, frames, seeds):
        """``Decoder.forward`` per text: masked blocks, then the generator."""
        import torch

        dec = self.model.decoder
        n = asr.shape[-1]
        mask, mask2 = _mask(frames, n), _mask(2 * frames, 2 * n)
        f0 = dec.F0_conv(_zero(f0_curve.unsqueeze(1), mask2))
        nn_ = dec.N_conv(_zero(n_curve.unsqueeze(1), mask2))
        x, _ = _adain_blk(dec.encode, torch.cat([asr, f0, nn_], dim=1), s, mask)
        asr_res = dec.asr_res(asr)
        residual = True
        for block in dec.decode:
            if residual:
                x = torch.cat([x, asr_res, f0, nn_], dim=1)
            x, mask = _adain_blk(block, x, s, mask)
            if block.upsample_type != "none":
                residual = False
        return self._generate(x, s, f0_curve, 2 * frames, seeds)

    def _generate(self, x, s, f0, steps, seeds):
        """``Generator.forward`` per text (*steps*: each text's length of *x*)."""
        import torch
        import torch.nn.functional as F

        gen = self.model.decoder.generator
        scale = math.prod(self._rates) * self._hop
        samples = steps * scale
        f0 = gen.f0_upsamp(f0[:, None]).transpose(1, 2)
        source = self._source(gen.m_source, f0, samples, seeds)
        # per text: center=True reflect-pads at the text's own end
        spectra = [
            gen.stft.transform(source[row : row + 1, : int(n)]) for row, n in enumerate(samples)
        ]
        width = max(mag.shape[-1] for mag, _ in spectra)
        har = torch.cat(
            [
                torch.cat(
                    [F.pad(mag, (0, width - mag.shape[-1])), F.pad(ph, (0, width - ph.shape[-1]))],
                    dim=1,
                )
                for mag, ph in spectra
            ],
            dim=0,
        )
        mask = _mask(steps, x.shape[-1])
        length = steps
        kernels = gen.num_kernels
        for i in range(gen.num_upsamples):
            last = i == gen.num_upsamples - 1
            x = F.leaky_relu(x, negative_slope=0.1)
            length = length * self._rates[i] + (1 if last else 0)
            x_source = gen.noise_convs[i](har)
            up = gen.ups[i](_zero(x, mask))
            if last:
                up = gen.reflection_pad(up)
            mask = _mask(length, up.shape[-1])
            x_source = _adain_res(gen.noise_res[i], x_source, s, mask)
            x = up + x_source
            x = (
                sum(_adain_res(gen.resblocks[i * kernels + j], x, s, mask) for j in range(kernels))
                / kernels
            )
        x = gen.conv_post(_zero(F.leaky_relu(x), mask))
        bins = gen.post_n_fft // 2 + 1
        spec, phase = torch.exp(x[:, :bins, :]), torch.sin(x[:, bins:, :])
        # per text: the overlap-add's normalisation near the end depends on the frames after it
        return [
            gen.stft.inverse(
                spec[row : row + 1, :, : int(n)], phase[row : row + 1, :, : int(n)]
            ).reshape(-1)
            for row, n in enumerate(length)
        ]

    def _source(self, msrc, f0, samples, seeds):
        """``SourceModuleHnNSF`` per text: phase stopped at its end, its own noise."""
        import torch
        import torch.nn.functional as F

        sine = msrc.l_sin_gen
        harmonics = torch.arange(1, sine.harmonic_num + 2, device=f0.device, dtype=f0.dtype)
        rad = (f0 * harmonics / sine.sampling_rate) % 1
        initial, noise = self._row_noise(seeds, samples, sine.dim, f0.shape[1], f0.dtype)
        rad[:, 0, :] = rad[:, 0, :] + initial
        down = F.interpolate(
            rad.transpose(1, 2), scale_factor=1 / sine.upsample_scale, mode="linear"
        )
        # past its end a text's phase stays where it ended, as F.interpolate clamps for a lone text
        steps = torch.div(samples, sine.upsample_scale, rounding_mode="floor")
        down = _zero(down, _mask(steps, down.shape[-1]))
        phase = torch.cumsum(down.transpose(1, 2), dim=1) * 2 * torch.pi
        phase = F.interpolate(
            phase.transpose(1, 2) * sine.upsample_scale,
            scale_factor=sine.upsample_scale,
            mode="linear",
        ).transpose(1, 2)
        sines = torch.sin(phase) * sine.sine_amp
        uv = (f0 > sine.voiced_threshold).to(f0.dtype)
        noise_amp = uv * sine.noise_std + (1 - uv) * sine.sine_amp / 3
        waves = sines * uv + noise_amp * noise
        return msrc.l_tanh(msrc.l_linear(waves)).squeeze(-1)

    def _row_noise(self, seeds, samples, dim: int, width: int, dtype):
        """Each text's initial harmonic phases ``[B, dim]`` and noise ``[B, width, dim]``.

        Drawn from a generator seeded by the text's tokens, over its own
        length only (zeros after), so a text's noise is the same in any batch.
        """
        import torch

        initial = torch.zeros((len(seeds), dim), device=self.device, dtype=dtype)
        noise = torch.zeros((len(seeds), width, dim), device=self.device, dtype=dtype)
        for row, (seed, n) in enumerate(zip(seeds, samples.tolist())):
            gen = torch.Generator(device=self.device).manual_seed(int(seed))
            initial[row] = torch.rand(dim, generator=gen, device=self.device, dtype=dtype)
            noise[row, : int(n)] = torch.randn(
                (int(n), dim), generator=gen, device=self.device, dtype=dtype
            )
        initial[:, 0] = 0  # no initial phase for the fundamental
        return initial, noise

    def close(self) -> None:
        """Drop the model and give its memory back (GPU memory included).

        A :meth:`shared` instance is released when its last user closes it.
        """
        with _SHARED_LOCK:
            if self.model is None:
                return
            self._users -= 1
            if self._users > 0:
                return
            self.model = None
            for key in [k for k, v in _SHARED.items() if v is self]:
                del _SHARED[key]
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- masked modules
def _mask(lengths, width: int):
    """``[B, 1, width]`` bool: True on each text's own positions."""
    import torch

    lengths = lengths.to(dtype=torch.long)
    return (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1)


def _zero(x, mask):
    """*x* with everything past each text's end set to 0 (``where``: inf/nan there stay out)."""
    import torch

    mask = mask.to(x.device)
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _packed_lstm(lstm, x, lengths, width: int):
    """A batch-first LSTM over each text's own length; zeros after it."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=width)
    return out


def _adain(adain, x, s, mask):
    """``AdaIN1d``: instance norm over each text's own frames, then its style's scale and shift."""
    import torch

    h = adain.fc(s).unsqueeze(-1)
    gamma, beta = torch.chunk(h, chunks=2, dim=1)
    norm = adain.norm
    mask = mask.to(x.dtype)
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = (x * mask).sum(dim=-1, keepdim=True) / count
    centred = torch.where(mask.bool(), x - mean, torch.zeros((), dtype=x.dtype, device=x.device))
    var = (centred * centred).sum(dim=-1, keepdim=True) / count
    y = (x - mean) * torch.rsqrt(var + norm.eps)
    if norm.affine:
        y = y * norm.weight[None, :, None] + norm.bias[None, :, None]
    return (1 + gamma) * y + beta


def _adain_blk(block, x, s, mask):
    """``AdainResBlk1d`` (the predictor's and decoder's blocks): ``(out, out_mask)``."""
    out_mask = mask
    h = block.actv(_adain(block.norm1, x, s, mask))
    if block.upsample_type != "none":
        h = block.pool(_zero(h, mask))
        out_mask = mask.repeat_interleave(2, dim=-1)
    h = block.conv1(_zero(h, out_mask))
    h = block.actv(_adain(block.norm2, h, s, out_mask))
    h = block.conv2(_zero(h, out_mask))
    return (h + block._shortcut(x)) * (1 / math.sqrt(2)), out_mask


def _adain_res(block, x, s, mask):
    """``AdaINResBlock1`` (the generator's blocks), with Snake activations."""
    import torch

    for c1, c2, n1, n2, a1, a2 in zip(
        block.convs1, block.convs2, block.adain1, block.adain2, block.alpha1, block.alpha2
    ):
        xt = _adain(n1, x, s, mask)
        xt = xt + (1 / a1) * (torch.sin(a1 * xt) ** 2)
        xt = c1(_zero(xt, mask))
        xt = _adain(n2, xt, s, mask)
        xt = xt + (1 / a2) * (torch.sin(a2 * xt) ** 2)
        xt = c2(_zero(xt, mask))
        x = xt + x
    return x
