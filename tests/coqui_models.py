"""Small randomly initialised Coqui models, built with coqui-tts's own classes.

CI cannot download weights, so the Coqui engine is tested on models the tests
build themselves: a real VITS (same classes, config and checkpoint format as a
downloaded one), only with tiny layer sizes.  Random weights speak noise, but
every code path (loading, tokenising, batching, speakers, vocoding) is real.
"""

from __future__ import annotations

import json
from pathlib import Path

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def build_tiny_vits(folder: Path, *, speakers: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write a tiny random VITS model (``model.pth`` + ``config.json``) into *folder*.

    Parameters
    ----------
    folder : pathlib.Path
        Created if missing.
    speakers : tuple of str
        Speaker names of a multi-speaker model (a ``speaker_ids.json`` is
        written beside the config, as Coqui's recipes do); empty for a
        single-speaker model.
    seed : int
        Seed of the random weights.

    Returns
    -------
    pathlib.Path
        *folder*.
    """
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    folder.mkdir(parents=True, exist_ok=True)
    args = VitsArgs(
        hidden_channels=32,
        hidden_channels_ffn_text_encoder=64,
        num_heads_text_encoder=2,
        num_layers_text_encoder=2,
        num_layers_flow=2,
        upsample_initial_channel_decoder=32,
        init_discriminator=False,
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        use_speaker_embedding=bool(speakers),
        speaker_embedding_channels=16,
    )
    config = VitsConfig(
        model_args=args,
        use_phonemes=False,
        phonemizer=None,
        text_cleaner="english_cleaners",
        add_blank=True,
        characters=CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters",
            pad="<PAD>",
            eos="<EOS>",
            bos="<BOS>",
            blank="<BLNK>",
            characters=_LETTERS,
            punctuations="!'(),-.:;? ",
        ),
    )
    if speakers:
        ids = {name: i for i, name in enumerate(speakers)}
        (folder / "speaker_ids.json").write_text(json.dumps(ids), encoding="utf-8")
        config.speakers_file = str(folder / "speaker_ids.json")
        config.model_args.speakers_file = str(folder / "speaker_ids.json")
        config.num_speakers = len(speakers)
        config.use_speaker_embedding = True
    torch.manual_seed(seed)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder
