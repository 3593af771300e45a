"""Where one strong-model training run spends its time: WeakSFT on the default world's seed-0 plain samples, fixed
budget, in this process under cProfile (needs the default study's cached stages under runs/).

    .venv/bin/python benchmarks/profile_training.py

Prints the run's wall time, the shares of forward, backward, optimiser step, data loading, the trainer's
tokenisation, logging and saving, then the top of the cumulative profile."""
import cProfile
import io
import os
import pstats
import tempfile
import time

os.environ["CONGKIT_QUIET"] = "1"
from congkit.pipeline import cong  # noqa: E402
from congkit.pipeline.stages import fixed_config  # noqa: E402
from congkit.study import study_objects  # noqa: E402

world, setting, pipe = study_objects("default", "runs", progress=False)
data = pipe.plain_samples(0, 0.0)
cfg = fixed_config(pipe, "weaksft", data)
model = pipe.load(setting.strong_base)
with tempfile.TemporaryDirectory() as work:
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    cong.sft(model, pipe.tokenizer, data, cfg, work_dir=work + "/w", save_to=None)
    prof.disable()
    total = time.perf_counter() - start
stats = pstats.Stats(prof)


def cum(pattern):
    return max((v[3] for k, v in stats.stats.items() if pattern(k)), default=0.0)
parts = {
  "forward (model __call__ in compute_loss)": cum(lambda k: k[2] == "compute_loss"),
  "backward": cum(lambda k: k[2] == "backward" and "torch" in k[0]),
  "optimizer step": cum(lambda k: k[2] == "step" and "optim" in k[0]),
  "data collation + loading": cum(lambda k: k[2] == "__next__" and "dataloader" in k[0]),
  "tokenisation / dataset prep (trainer init)": cum(lambda k: k[2] == "__init__" and "sft_trainer" in k[0]),
  "logging": cum(lambda k: k[2] == "log" and "trainer" in k[0]),
  "save / checkpoint": cum(lambda k: k[2] in ("_save_checkpoint", "save_model")),
}
print(f"total {total:.1f} s")
for name, seconds in parts.items():
    print(f"{name}: {seconds:.2f} s ({seconds / total:.0%})")
top = io.StringIO()
pstats.Stats(prof, stream=top).sort_stats("cumulative").print_stats(25)
print(top.getvalue()[:6000])
