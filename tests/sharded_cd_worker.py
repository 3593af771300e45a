"""Run by tests/test_distributed.py under `accelerate launch --multi_gpu --num_processes 2` on a CPU machine (two
processes, one gloo group): sharded CD, merged output written as JSON by the main process."""

import json
import sys

from congkit.models import load_causal_lm, load_tokenizer
from congkit.pipeline.distributed import process_state, sharded_generate


def main(model_dir: str, out_path: str, prompts_path: str) -> None:
    state = process_state()  # before loading models: from_pretrained may set up accelerate's state itself
    tok = load_tokenizer(f"{model_dir}/expert")
    expert = load_causal_lm(f"{model_dir}/expert", device="cpu")
    amateur = load_causal_lm(f"{model_dir}/amateur", device="cpu")
    prompts = json.loads(open(prompts_path).read())
    out = sharded_generate(expert, amateur, tok, prompts, alpha=0.4, seed=7, max_new_tokens=16, batch_size=3)
    if state.is_main_process:
        json.dump(
            {"ids": out.token_ids, "rewards": out.log_ratios, "processes": state.num_processes}, open(out_path, "w")
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
