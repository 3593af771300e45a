"""Build workers: processes that build cached stages in parallel and never outlive the run that started them.

Each worker runs with one torch thread (two one-thread processes do about twice the work of one two-thread process on
2 cores), quiet, stepping the two models of a CD step in turn. A watchdog thread in each worker ends it as soon as its
parent is gone (killed by SIGKILL, SIGTERM or SIGINT), so no orphan goes on building and then blocks forever on a
pipe; what it was building is left as a `*.tmp-*` folder that the next run's lock holder removes.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import active_children, get_context

QUIET_ENV = {"CONGKIT_QUIET": "1", "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
WATCH_SECONDS = 0.5  # how often a worker checks that its parent is alive


def one_core_worker() -> None:
    """Set up a build worker process: one torch thread, quiet, and the two models of a decoding step run in turn,
    not in two threads."""
    import torch

    torch.set_num_threads(1)
    os.environ.update(QUIET_ENV)
    os.environ["CONGKIT_THREADS"] = "keep"


def settle() -> None:
    """Exempt every object built so far from garbage collection (`gc.freeze`), once a job has built what it keeps for
    its whole run (world, setting, tokenizer, prompts): accelerate calls `gc.collect()` before every training, which
    took 0.19 s a call with those objects tracked (about 3 s of a default replicate's 17 trainings) and ~0 after."""
    gc.freeze()


def exit_with_parent(parent: int) -> None:
    """Start a daemon thread that ends this process (exit code 1) once `parent` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="congkit-parent-watch", daemon=True).start()


def _start_worker(parent: int) -> None:
    exit_with_parent(parent)
    one_core_worker()


def run_in_workers(job: Callable, jobs: Iterable, workers: int, describe: Callable[[int, int, object], str],
                   tag: str = "study") -> list:  # fmt: skip
    """`job(j)` for every j in `jobs`, in `workers` spawned build workers (one worker: in this process), in order;
    one progress line per finished job on stderr (`describe(done, total, result)`). The results, in job order."""
    jobs = list(jobs)
    results = []
    if workers <= 1:  # in this process, in order
        for done, job_ in enumerate(jobs, 1):
            results.append(job(job_))
            print(f"[{tag}]   {describe(done, len(jobs), results[-1])}", file=sys.stderr, flush=True)
        return results
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                               initargs=(os.getpid(),))  # fmt: skip
    try:
        for done, result in enumerate(pool.map(job, jobs), 1):
            print(f"[{tag}]   {describe(done, len(jobs), result)}", file=sys.stderr, flush=True)
            results.append(result)
    except KeyboardInterrupt:  # stop at once, saying so, rather than wait for the jobs that are running to finish
        print(f"[{tag}] interrupted: stopping the build workers now; what they were building is left unfinished "
              "(*.tmp-* folders the next run removes), everything finished stays cached", file=sys.stderr, flush=True)
        for child in active_children():
            child.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def die_with_parent() -> None:
    """In a child process before it runs (`preexec_fn`): on Linux, ask the kernel to end it with SIGTERM when the
    study that started it dies (killed or not), so no `jupyter-book` build outlives the study. Elsewhere nothing."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
