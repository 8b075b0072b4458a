"""A tiny, randomly initialised Coqui XTTS v2 model folder for tests.

No pretrained XTTS weights can be downloaded where the tests run, so
:func:`build_tiny_xtts` writes a folder with the same files and formats as a
downloaded XTTS v2 model (``config.json``, ``model.pth``, ``vocab.json`` and
``speakers_xtts.pth``), but with a GPT of about 0.7 million parameters
instead of ~400 million.  Coqui's own loading code reads it unchanged, e.g.::

    config = XttsConfig()
    config.load_json(folder / "config.json")
    model = Xtts(config)
    model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)

The weights are random, so the "speech" is noise; the model is only good for
exercising the code paths (loading, voice cloning, inference, output format).
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["build_tiny_xtts"]

#: GPT size of the tiny model (the real XTTS v2 uses 30 layers, 1024 channels, 16 heads).
_GPT_LAYERS = 2
_GPT_CHANNELS = 64
_GPT_HEADS = 4
#: At most ``_GPT_MAX_AUDIO_TOKENS - 3`` audio codes are generated (real model: 605),
#: i.e. at most about 1.7 s of 24 kHz audio per sentence.
_GPT_MAX_AUDIO_TOKENS = 40

#: Gain of the decoder's last convolution.  With Coqui's random initialisation
#: the output is a near-silent DC offset (peak ~0.03); zero-sum taps and this
#: gain give DC-free noise with an RMS of about 0.09 (peak ~0.35).
_OUTPUT_GAIN = 20.0
_CONV_POST = "hifigan_decoder.waveform_decoder.conv_post.weight"

#: Names of the built-in voices written to ``speakers_xtts.pth`` (two of the
#: real XTTS v2 studio speakers).
_SPEAKERS = ("Claribel Dervla", "Ana Florence")

#: BPE merges of the tiny vocabulary, so that the tokenizer is a real BPE model
#: (multi-character tokens), not only a character table.
_MERGES = (
    ("t", "h"),
    ("th", "e"),
    ("i", "n"),
    ("in", "g"),
    ("a", "n"),
    ("an", "d"),
    ("e", "r"),
    ("o", "n"),
    ("r", "e"),
    ("e", "s"),
)

#: Characters that ``multilingual_cleaners`` leaves in text of XTTS's languages
#: (Chinese, Japanese and Korean are romanised before tokenisation).
_ALPHABET = (
    string.ascii_lowercase
    + string.digits
    + ".,!?;:'\"-()&%$@/+*=<>#_¡¿"
    + "àáâãäåæçèéêëìíîïñòóôõöøœß"
    + "ùúûüýÿąćęłńśźżčďěňřšťůžğışő"
    + "".join(map(chr, range(0x430, 0x450)))  # Cyrillic а-я
    + "ё"
    + "".join(map(chr, range(0x621, 0x64B)))  # Arabic letters
    + "".join(map(chr, range(0x900, 0x980)))  # Devanagari
)


def _vocab_tokens(languages: list[str]) -> list[str]:
    """Return the tokens of the tiny vocabulary, their position being their id.

    Like the real XTTS vocabulary, ``[STOP]``, ``[UNK]`` and ``[SPACE]`` come
    first (ids 0, 1, 2), followed by the characters, the merged tokens, one
    ``[lang]`` token per language and finally ``[START]``.
    """
    tokens = ["[STOP]", "[UNK]", "[SPACE]"]
    tokens += list(dict.fromkeys(_ALPHABET))
    tokens += [a + b for a, b in _MERGES]
    tokens += [f"[{lang}]" for lang in languages]
    tokens.append("[START]")
    return tokens


def _write_vocab(path: Path, languages: list[str]) -> dict[str, int]:
    """Write a ``tokenizers`` BPE file that ``VoiceBpeTokenizer`` accepts.

    Parameters
    ----------
    path : pathlib.Path
        Where to write ``vocab.json``.
    languages : list of str
        Language codes of the model (``config.languages``); each gets a
        ``[code]`` special token, which ``VoiceBpeTokenizer.encode`` prepends.

    Returns
    -------
    dict of str to int
        The vocabulary (token to id).
    """
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace

    tokens = _vocab_tokens(languages)
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=list(_MERGES), unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    specials = [t for t in tokens if t.startswith("[") and t.endswith("]") and len(t) > 1]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.save(str(path))
    return vocab


def _make_output_audible(state: dict) -> None:
    """Make the random decoder's output audible, DC-free noise (in place).

    Each input channel's taps of the last convolution are shifted to sum to
    zero, so that the (time-constant) channel means of the random features no
    longer add up to a DC offset, and then scaled by ``_OUTPUT_GAIN``.  Only
    values change; keys, shapes and dtypes stay those of a real checkpoint.

    Parameters
    ----------
    state : dict
        The model's state dict; its ``conv_post`` weight is replaced.
    """
    weight = state[_CONV_POST]
    state[_CONV_POST] = (weight - weight.mean(dim=-1, keepdim=True)) * _OUTPUT_GAIN


def build_tiny_xtts(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised XTTS v2 model into ``folder``.

    The folder has the layout of a downloaded XTTS v2 model and loads through
    Coqui's public code (``Xtts.load_checkpoint``, ``Synthesizer``,
    ``TTS.api.TTS(model_path=folder, config_path=folder / "config.json")``).

    Only the GPT is shrunk (2 layers, 64 channels, 4 heads, at most 37 audio
    codes per sentence).  The HiFi-GAN decoder (about 14.4 M parameters) and
    its speaker encoder (about 8.0 M parameters) have sizes that XTTS's config
    does not expose, so they keep their real size: ``model.pth`` is about
    93 MB.  The random weights produce noise, not speech; the decoder's last
    layer is adjusted so that this noise is audible and free of DC offset
    (RMS about 0.09).

    Parameters
    ----------
    folder : pathlib.Path
        Target folder; created if missing.  Existing model files in it are
        overwritten.
    seed : int, optional
        Seed of the random weights and built-in voices (the caller's global
        torch RNG state is left untouched).  Default 0.

    Returns
    -------
    pathlib.Path
        ``folder``, now holding ``config.json`` (``XttsConfig``),
        ``model.pth`` (``{"model": state_dict}``), ``vocab.json`` (a
        ``tokenizers`` BPE file with ``[STOP]``, ``[UNK]``, ``[SPACE]``,
        ``[START]`` and one ``[lang]`` token per language) and
        ``speakers_xtts.pth`` (built-in voices, name to
        ``{"gpt_cond_latent", "speaker_embedding"}``).
    """
    import torch
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.models.xtts import Xtts

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    config = XttsConfig()
    vocab = _write_vocab(folder / "vocab.json", list(config.languages))
    config.model_args = XttsArgs(
        gpt_layers=_GPT_LAYERS,
        gpt_n_model_channels=_GPT_CHANNELS,
        gpt_n_heads=_GPT_HEADS,
        gpt_max_audio_tokens=_GPT_MAX_AUDIO_TOKENS,
        gpt_max_text_tokens=402,
        gpt_max_prompt_tokens=70,
        gpt_number_text_tokens=max(vocab.values()) + 1,
        gpt_start_text_token=vocab["[START]"],
        gpt_stop_text_token=vocab["[STOP]"],
        # the XTTS v2 values: 1024 DVAE codes plus start and stop tokens
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_use_perceiver_resampler=True,  # XTTS v2 (v1 has no perceiver)
        gpt_use_masking_gt_prompt_approach=True,
        # the GPT latents feed the HiFi-GAN decoder directly
        decoder_input_dim=_GPT_CHANNELS,
        d_vector_dim=512,  # fixed by the speaker encoder's output size
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Xtts(config)
        state = model.state_dict()
        _make_output_audible(state)
        speakers = {}
        for name in _SPEAKERS:
            embedding = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
            speakers[name] = {
                "gpt_cond_latent": torch.randn(1, 32, _GPT_CHANNELS),
                "speaker_embedding": embedding.unsqueeze(-1),
            }

    torch.save({"model": state}, folder / "model.pth")
    torch.save(speakers, folder / "speakers_xtts.pth")
    config.save_json(str(folder / "config.json"))
    return folder
