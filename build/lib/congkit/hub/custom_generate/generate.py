"""congkit's contrastive decoding in transformers' `custom_generate` folder format:

    model.generate(**inputs, custom_generate=congkit.CUSTOM_GENERATE_DIR, trust_remote_code=True,
                   amateur_model=pi_ref, alpha=0.5, min_p=0.1, tokenizer=tokenizer, stop_strings=["\\n\\n"], ...)

The implementation is `congkit.generation` (see its docstring); this file only exposes it under the name transformers
loads.
"""

from congkit.generation import generate  # noqa: F401
