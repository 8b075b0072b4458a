"""Randomly initialised Kokoro ``KModel`` files, built with the kokoro package's own classes.

Nothing can be downloaded here, so the torch path is tested (and benchmarked,
``benchmarks/gpu_check.py``) on models built from kokoro's modules and saved
in the format hexgrad/Kokoro-82M ships: a ``.pth`` state dict of
``{"bert", "bert_encoder", "predictor", "text_encoder", "decoder"}`` and a
``config.json``.  ``size="full"`` is the real Kokoro-82M architecture (82 M
parameters); ``size="tiny"`` shrinks what the architecture lets shrink (the
ALBERT, the layer counts, the vocoder's kernels; the decoder's 512/1024
channels are fixed in kokoro's code) so a CPU speaks a sentence in a fraction
of a second.  Random weights speak noise, but every code path is real.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

#: Phoneme-ish symbols of the synthetic vocab (ids 1..len; 0 is the pad).
SYMBOLS = "abcdefghijklmnopqrstuvwxyzæðŋɐɑɒɔəɛɜɪʃʊʌʒθˈˌː .,!?"


def config_for(size: str = "tiny") -> dict:
    """A ``config.json`` dict: the Kokoro-82M architecture (``"full"``) or a small one."""
    vocab = {s: i + 1 for i, s in enumerate(SYMBOLS)}
    if size == "full":  # hexgrad/Kokoro-82M's config.json, with a synthetic vocab
        return {
            "istftnet": {
                "upsample_kernel_sizes": [20, 12],
                "upsample_rates": [10, 6],
                "gen_istft_hop_size": 5,
                "gen_istft_n_fft": 20,
                "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                "resblock_kernel_sizes": [3, 7, 11],
                "upsample_initial_channel": 512,
            },
            "dim_in": 64,
            "dropout": 0.2,
            "hidden_dim": 512,
            "max_conv_dim": 512,
            "max_dur": 50,
            "multispeaker": True,
            "n_layer": 3,
            "n_mels": 80,
            "n_token": 178,
            "style_dim": 128,
            "text_encoder_kernel_size": 5,
            "plbert": {
                "hidden_size": 768,
                "num_attention_heads": 12,
                "intermediate_size": 2048,
                "max_position_embeddings": 512,
                "num_hidden_layers": 12,
                "dropout": 0.1,
            },
            "vocab": vocab,
        }
    if size != "tiny":
        raise ValueError(f"size must be 'tiny' or 'full', not {size!r}")
    return {
        "istftnet": {
            "upsample_kernel_sizes": [20, 12],
            "upsample_rates": [10, 6],
            "gen_istft_hop_size": 5,
            "gen_istft_n_fft": 20,
            "resblock_dilation_sizes": [[1, 3, 5]],
            "resblock_kernel_sizes": [3],
            "upsample_initial_channel": 512,
        },
        "dim_in": 64,
        "dropout": 0.2,
        "hidden_dim": 512,
        "max_conv_dim": 512,
        "max_dur": 4,
        "multispeaker": True,
        "n_layer": 1,
        "n_mels": 80,
        "n_token": len(SYMBOLS) + 1,
        "style_dim": 128,
        "text_encoder_kernel_size": 5,
        "plbert": {
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 512,
            "num_hidden_layers": 1,
            "dropout": 0.1,
        },
        "vocab": vocab,
    }


def build_kokoro(
    folder: Path, size: str = "tiny", *, seed: int = 0, frames_per_token: float | None = None
):
    """Write ``kokoro.pth`` and ``config.json`` of a random ``KModel`` into *folder*.

    Parameters
    ----------
    folder : pathlib.Path
        Created if missing.
    size : {"tiny", "full"}
    seed : int
        Seed of the random weights.
    frames_per_token : float, optional
        Bias the duration predictor so each token lasts about this many
        25 ms frames (real speech: ~3).  Random weights otherwise give
        ``max_dur / 2`` (25 for the full model: ten times too much audio).

    Returns
    -------
    (pathlib.Path, dict)
        The ``.pth`` file and the config.
    """
    import torch
    from transformers import AlbertConfig

    from ebook2audio_dask.engines.kokoro_torch import kmodel_class

    kmodel_class()  # imports kokoro.modules / kokoro.istftnet without kokoro/__init__
    from kokoro.istftnet import Decoder
    from kokoro.modules import CustomAlbert, ProsodyPredictor, TextEncoder

    config = config_for(size)
    torch.manual_seed(seed)
    hidden, style = config["hidden_dim"], config["style_dim"]
    parts = {
        "bert": CustomAlbert(AlbertConfig(vocab_size=config["n_token"], **config["plbert"])),
        "bert_encoder": torch.nn.Linear(config["plbert"]["hidden_size"], hidden),
        "predictor": ProsodyPredictor(
            style_dim=style,
            d_hid=hidden,
            nlayers=config["n_layer"],
            max_dur=config["max_dur"],
            dropout=config["dropout"],
        ),
        "text_encoder": TextEncoder(
            channels=hidden,
            kernel_size=config["text_encoder_kernel_size"],
            depth=config["n_layer"],
            n_symbols=config["n_token"],
        ),
        "decoder": Decoder(
            dim_in=hidden, style_dim=style, dim_out=config["n_mels"], **config["istftnet"]
        ),
    }
    if frames_per_token is not None:
        proj = parts["predictor"].duration_proj.linear_layer
        p = min(max(frames_per_token / config["max_dur"], 1e-4), 1 - 1e-4)
        with torch.no_grad():
            proj.weight.mul_(0.01)
            proj.bias.fill_(math.log(p / (1 - p)))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kokoro.pth"
    torch.save({name: module.state_dict() for name, module in parts.items()}, path)
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return path, config
