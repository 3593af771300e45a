"""The synthetic alignment world: prompts, an exact explicit reward, and a noisy pre-alignment corpus.

Everything the paper needs exists here for real, at a size a 2-core CPU trains in minutes:

- **Prompts** from task families rendered as instructions. Alignment families: `add`, `sort`, `reverse`, `count`.
  The held-out family `max` never appears in an alignment prompt; it measures capability retention.
- **The explicit reward** `explicit_reward(prompt, response)` in [0, 1] (the paper's ArmoRM, here exact):

      r* = 0.5 * correct + 0.2 * format + 0.1 * no_filler + 0.1 * no_repetition + 0.1 * concise

  `correct`: the first answer in the response equals the truth. `format`: the answer is stated as "Answer: X".
  `no_filler`: no chatter before the answer. `no_repetition`: the answer statement appears once. `concise`:
  `max(0, 1 - extra_chars / 40)` for characters beyond the canonical "Answer: <truth>". A response that is empty,
  longer than 200 characters, not ASCII, or holds no answer at all scores 0. So capability (correct) and preference
  (the rest) both count, and alignment has something to fix that is not pure skill.
- **The pre-alignment corpus**: each response starts from the canonical "Answer: <truth>" and independently gets
  each kind of noise at a documented rate (`NoiseRates`): a wrong answer of a plausible kind, filler before it, a
  format slip ("The answer is X." or a bare X), repetition of the answer statement (on a new line), and a
  verbose tail.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from datasets import Dataset

ALIGNMENT_FAMILIES = ("add", "sort", "reverse", "count")
HELDOUT_FAMILY = "max"
FAMILIES = ALIGNMENT_FAMILIES + (HELDOUT_FAMILY,)

FILLERS = ("Sure! ", "Let me think. ", "Okay, so ", "Great question! ")
VERBOSE_TAILS = (" I hope this helps!", " Let me know if you need more.", " That is all.")
MAX_RESPONSE_CHARS = 200
LETTERS = "abcdef"

# The answer each family expects, as a regular expression: the first match after the prefix is "the answer".
ANSWER_PATTERNS = {
    "add": r"\d+",
    "count": r"\d+",
    "max": r"\d+",
    "sort": r"[a-z](?: [a-z])*",
    "reverse": r"[a-z]+",
}


@dataclass(frozen=True)
class Task:
    family: str
    prompt: str
    answer: str


@dataclass
class NoiseRates:
    """Per-response probabilities of each kind of noise in the pre-alignment corpus (drawn independently)."""

    wrong: float = 0.25
    filler: float = 0.3
    format_slip: float = 0.25
    repetition: float = 0.15
    verbose: float = 0.25


# --- prompts ------------------------------------------------------------------------------------------------------


def make_task(family: str, rng: random.Random) -> Task:
    """One random task of `family`, with its prompt text and its true answer."""
    if family == "add":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        prompt = rng.choice(["Add {a} and {b}.", "What is {a} + {b}?"]).format(a=a, b=b)
        return Task(family, prompt, str(a + b))
    if family == "sort":
        letters = rng.sample(LETTERS, 3)
        prompt = rng.choice(["Sort: {x}", "Put in order: {x}"]).format(x=" ".join(letters))
        return Task(family, prompt, " ".join(sorted(letters)))
    if family == "reverse":
        word = "".join(rng.choice(LETTERS) for _ in range(3))
        prompt = rng.choice(["Reverse the word {w}.", "Spell {w} backwards."]).format(w=word)
        return Task(family, prompt, word[::-1])
    if family == "count":
        text = "".join(rng.choice("ab") for _ in range(rng.randint(4, 6)))
        prompt = rng.choice(["Count the a in {s}.", "How many a in {s}?"]).format(s=text)
        return Task(family, prompt, str(text.count("a")))
    if family == "max":
        nums = rng.sample(range(1, 10), 3)
        prompt = rng.choice(["Largest of {x}?", "Max of {x}."]).format(x=" ".join(map(str, nums)))
        return Task(family, prompt, str(max(nums)))
    raise ValueError(f"unknown task family {family!r}; known: {FAMILIES}")


def wrong_answer(task: Task, rng: random.Random) -> str:
    """A plausible mistake, never the truth: off by one (numbers), runner-up (max), an adjacent swap (sort),
    the unreversed word or a swapped pair (reverse)."""
    answer = _plausible_mistake(task, rng)
    if answer == task.answer:  # e.g. a palindrome "reversed" by not reversing it
        answer = str(int(answer) + 1) if answer.isdigit() else answer[:-1] + ("a" if answer[-1] != "a" else "b")
    return answer


def _plausible_mistake(task: Task, rng: random.Random) -> str:
    if task.family in ("add", "count"):
        return str(max(0, int(task.answer) + rng.choice([-1, 1, 2])) if task.answer != "0" else 1)
    if task.family == "max":
        nums = [int(x) for x in task.prompt.rstrip("?.").split()[-4:] if x.isdigit()]
        others = sorted(n for n in nums if str(n) != task.answer)
        return str(others[-1]) if others else str(int(task.answer) + 1)
    if task.family == "sort":
        parts = task.answer.split()
        i = rng.randrange(len(parts) - 1)
        parts[i], parts[i + 1] = parts[i + 1], parts[i]
        return " ".join(parts)
    if task.family == "reverse":
        original = task.answer[::-1]
        return original if rng.random() < 0.5 else task.answer[1] + task.answer[0] + task.answer[2:]
    raise ValueError(task.family)


def noisy_response(task: Task, rates: NoiseRates, rng: random.Random) -> tuple[str, dict[str, bool]]:
    """A pre-alignment response and the noise it carries."""
    noise = {k: rng.random() < v for k, v in asdict(rates).items()}
    answer = wrong_answer(task, rng) if noise["wrong"] else task.answer
    if noise["format_slip"]:
        statement = rng.choice(["The answer is {a}.", "{a}"]).format(a=answer)
    else:
        statement = f"Answer: {answer}"
    text = statement
    if noise["repetition"]:
        text = f"{text}\n{statement}"
    if noise["filler"]:
        text = rng.choice(FILLERS) + text
    if noise["verbose"]:
        text += rng.choice(VERBOSE_TAILS)
    return text, noise


def canonical_response(task: Task) -> str:
    return f"Answer: {task.answer}"


# --- the explicit reward ------------------------------------------------------------------------------------------


@dataclass
class Judgement:
    """What the explicit reward saw in a response; `score` in [0, 1]."""

    score: float
    well_formed: bool
    correct: bool
    format_ok: bool
    filler: bool
    repetition: bool
    trailing: bool  # text after the answer statement (a verbose tail or a repetition)
    extra_chars: int


def judge(task: Task, response: str) -> Judgement:
    """Score `response` to `task` with the explicit reward (module docstring); never raises on any string."""
    garbage = Judgement(0.0, False, False, False, True, False, False, len(response or ""))
    if not isinstance(response, str):
        return garbage
    text = response.strip()
    if not text or len(text) > MAX_RESPONSE_CHARS or not text.isascii():
        return garbage
    pattern = ANSWER_PATTERNS[task.family]
    # The answer statement: after the first "Answer: " or "The answer is ", else a bare answer at the start once
    # known filler phrases are removed. Anything before the statement is filler.
    match = re.search(r"(?:Answer: |The answer is )(" + pattern + ")", text)
    if match is None:
        rest = text
        while rest.startswith(FILLERS):
            rest = rest[next(len(f) for f in FILLERS if rest.startswith(f)) :]
        match = re.match(r"(" + pattern + r")(?![A-Za-z0-9])", rest)
        if match is None:
            return garbage
        start, statement = len(text) - len(rest), match.group(0)
    else:
        start, statement = match.start(), match.group(0)
    filler = start > 0
    format_ok = text[start:].startswith("Answer: ")
    correct = match.group(1) == task.answer
    repetition = text.count(statement) > 1 or "\n" in text
    trailing = bool(text[start + len(statement) :].strip(" ."))
    extra = max(0, len(text) - len(canonical_response(task)))
    concise = max(0.0, 1.0 - extra / 40)
    score = 0.5 * correct + 0.2 * format_ok + 0.1 * (not filler) + 0.1 * (not repetition) + 0.1 * concise
    return Judgement(round(score, 6), True, correct, format_ok, filler, repetition, trailing, extra)


def explicit_reward(task: Task, response: str) -> float:
    return judge(task, response).score


# --- the world's datasets -----------------------------------------------------------------------------------------


@dataclass
class WorldData:
    """Sizes and seed of the world's prompt sets and corpus."""

    seed: int = 0
    corpus_size: int = 6000  # pre-alignment (prompt, response) pairs, all five families
    n_train_prompts: int = 400  # alignment prompts (no held-out family)
    n_eval_prompts: int = 200  # evaluation prompts (alignment families, disjoint from train)
    n_heldout_prompts: int = 100  # held-out family, for capability retention
    noise: NoiseRates = field(default_factory=NoiseRates)


def _unique_tasks(families: tuple[str, ...], n: int, rng: random.Random, exclude: set[str]) -> list[Task]:
    tasks, seen, tries = [], set(exclude), 0
    while len(tasks) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct prompts from families {families}; ask for fewer")
        task = make_task(families[len(tasks) % len(families)], rng)
        if task.prompt not in seen:
            seen.add(task.prompt)
            tasks.append(task)
    return tasks


def tasks_to_dataset(tasks: list[Task]) -> Dataset:
    return Dataset.from_dict(
        {"prompt": [t.prompt for t in tasks], "answer": [t.answer for t in tasks], "family": [t.family for t in tasks]}
    )


def dataset_tasks(ds: Dataset) -> list[Task]:
    return [Task(f, p, a) for f, p, a in zip(ds["family"], ds["prompt"], ds["answer"])]


def build_prompt_sets(config: WorldData) -> dict[str, Dataset]:
    """Disjoint train / eval prompts (alignment families) and held-out-family prompts, seeded."""
    rng = random.Random(config.seed)
    train = _unique_tasks(ALIGNMENT_FAMILIES, config.n_train_prompts, rng, set())
    evaluation = _unique_tasks(ALIGNMENT_FAMILIES, config.n_eval_prompts, rng, {t.prompt for t in train})
    heldout = _unique_tasks((HELDOUT_FAMILY,), config.n_heldout_prompts, rng, set())
    return {
        "train": tasks_to_dataset(train),
        "eval": tasks_to_dataset(evaluation),
        "heldout": tasks_to_dataset(heldout),
    }


def build_corpus(config: WorldData, exclude_prompts: set[str] = frozenset()) -> Dataset:
    """The pre-alignment corpus: noisy responses over all five families; evaluation prompts are excluded."""
    rng = random.Random(config.seed + 1)
    rows = {"prompt": [], "completion": [], "family": [], "answer": []}
    noise_cols = {k: [] for k in asdict(config.noise)}
    while len(rows["prompt"]) < config.corpus_size:
        task = make_task(FAMILIES[len(rows["prompt"]) % len(FAMILIES)], rng)
        if task.prompt in exclude_prompts:
            continue
        response, noise = noisy_response(task, config.noise, rng)
        rows["prompt"].append(task.prompt)
        rows["completion"].append(response)
        rows["family"].append(task.family)
        rows["answer"].append(task.answer)
        for k, v in noise.items():
            noise_cols[k].append(v)
    return Dataset.from_dict({**rows, **{f"noise_{k}": v for k, v in noise_cols.items()}})


def task_index(*datasets: Dataset) -> dict[str, Task]:
    """prompt -> Task over the given prompt sets (the explicit reward needs each prompt's task)."""
    index = {}
    for ds in datasets:
        for task in dataset_tasks(ds):
            index[task.prompt] = task
    return index


class ExplicitReward:
    """The world's exact explicit reward as a scorer over (prompt, response) texts."""

    def __init__(self, tasks: dict[str, Task]):
        self.tasks = tasks

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        missing = [p for p in prompts if p not in self.tasks]
        if missing:
            raise KeyError(f"the world's reward does not know the prompt {missing[0]!r}")
        return [explicit_reward(self.tasks[p], r) for p, r in zip(prompts, responses)]

    def judge(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        return [judge(self.tasks[p], r) for p, r in zip(prompts, responses)]
