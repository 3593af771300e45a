"""Contrastive decoding as a stock `generate` strategy: `model.generate(..., custom_generate=contrastive_decoding)`.

The strategy lives in the folder transformers loads (`CUSTOM_GENERATE_DIR/custom_generate/generate.py`, with the one
CD step in `step.py` beside it), so that the same file runs from congkit, from a local folder and from the Hub; its
docstring says what it does, what it refuses and how its settings persist. This module names it in congkit:

    out = pi_r.generate(**inputs, custom_generate=congkit.contrastive_decoding, amateur_model=pi_ref, alpha=0.5,
                        plausibility_threshold=0.1, do_sample=True, temperature=0.8, top_p=0.95,
                        return_dict_in_generate=True)
    out.implicit_rewards, out.cache, out.amateur_cache
"""

from __future__ import annotations

from pathlib import Path

from congkit.hub.custom_generate.generate import (  # noqa: F401
    CD_DEFAULTS,
    ContrastiveDecoderOnlyOutput,
    cd_generation_config,
    cd_settings,
    contrastive_decoding,
    generate,
    refuse_unsupported,
)

CUSTOM_GENERATE_DIR = str(Path(__file__).with_name("hub"))  # holds custom_generate/generate.py
