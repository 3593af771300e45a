r"""The synthetic alignment world: prompts, two exact reward channels, and a noisy pre-alignment corpus.

Everything the paper needs exists here for real, at a size a 2-core CPU trains in minutes. Text is words separated
by single spaces, and the world's tokenizer (`congkit.models.word_tokenizer`) makes every word one token, so each
preference is decided at a token: the first response token chooses filler or not, the statement's first token
chooses the format, the token after the answer chooses to stop, repeat or add a closing phrase.

- **Prompts**: a task and two instructions, e.g. `Add 3 and 14 . style=tag length=short`. Alignment families: `add`,
  `sort`, `reverse`, `count`; the held-out family `max` never appears in an alignment prompt (capability retention).
- **R_cap** (capability, in {0, 1}): the first answer stated equals the truth.
- **R_pref** (preference, the analogue of AlpacaEval / Arena-Hard, in {0, .25, .5, .75, 1}): the mean of four
  attributes, two of them set by the prompt's instructions:
  `format` (style=tag wants `Answer: X`, style=sentence wants `The answer is X .`), `length` (length=full wants one
  closing phrase after the answer, length=short none), `no_filler` (no chatter before the answer), `no_repetition`
  (the answer is stated once).
- **r\*** (what a reward model would say; it ranks the weak preference pairs and the gold ceiling's pairs):
  `r* = 0.8 R_pref + 0.2 R_cap`. A response with no parsable answer statement scores 0 on every channel.
- **The pre-alignment corpus** ignores the instructions: each attribute is violated independently at a documented
  rate (`NoiseRates`), and a fraction of answers is wrong. So both base models follow the instructions only by
  chance, and alignment has something to teach that is not skill.
- **Knobs of the world's shape** (`WorldShape`; the defaults are the world above): `format_span` k spreads the format
  over k lead words, each of either kind in interchangeable wordings, judged by majority, so no single token decides
  it; `closing_target` m > 0 makes length=full want exactly m closing phrases, scored 1 - |c - m| / m, so more is
  better only up to m and amplifying the weak direction can overshoot.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from datasets import Dataset

ALIGNMENT_FAMILIES = ("add", "sort", "reverse", "count")
HELDOUT_FAMILY = "max"
FAMILIES = ALIGNMENT_FAMILIES + (HELDOUT_FAMILY,)
STYLES = ("tag", "sentence")
LENGTHS = ("short", "full")
PREFERENCE_ATTRIBUTES = ("format", "length", "no_filler", "no_repetition")

FILLERS = ("Sure!", "Okay,", "Well,", "Hmm,")
# the lead words of a statement when the format is spread over a span (`WorldShape.format_span` > 1): interchangeable
# wordings of each kind; the majority kind among the span's words is the statement's format
TAG_LEAD = ("Answer:", "Result:", "Output:")
SENTENCE_LEAD = ("So", "then", "clearly")
CLOSINGS = ("Hope this helps!", "Glad to help!", "Ask me more!")
MAX_RESPONSE_WORDS = 40
LETTERS = "abcdefgh"
NUMBER_RANGE = 20  # add operands and max candidates are 0..19

# The answer each family expects, as a regular expression over the space-separated words.
ANSWER_PATTERNS = {
    "add": r"\d+",
    "count": r"\d+",
    "max": r"\d+",
    "sort": r"[a-h] [a-h] [a-h]",
    "reverse": r"[a-h] [a-h] [a-h]",
}


@dataclass(frozen=True)
class Task:
    family: str
    prompt: str
    answer: str
    style: str = "tag"
    length: str = "short"


@dataclass(frozen=True)
class WorldShape:
    """How the world's preferences sit in the tokens. The defaults are the original world: each preference decided at
    one token, every attribute binary with its extreme preferred.

    Args:
        format_span: k >= 1 lead words carry the format; with k > 1 each is a tag word (`TAG_LEAD`) or a sentence word
            (`SENTENCE_LEAD`), in interchangeable wordings, and the format is the majority kind (k odd). It models a
            preference expressed over a phrase, as tone or register is in LLM responses: no single token decides it,
            so the weak pair's per-token log-ratio is spread over the span. The corpus flips each word's kind apart.
        closing_target: m = 0: length=full wants at least one closing phrase (binary). m > 0: it wants exactly m,
            scored 1 - |c - m| / m (0 below 0) for c closings, and the corpus says 1..m of them; this models a
            preference with an optimum inside the range (length, detail, enthusiasm) that amplifying a learned
            direction ("more is better") can overshoot.
    """

    format_span: int = 1
    closing_target: int = 0

    def describe(self) -> dict[str, str]:
        """Each knob's value and what it models, in words (the world card shows them)."""
        span = ("one token decides the format" if self.format_span == 1 else
                f"the format spread over {self.format_span} lead words, decided by their majority (a preference "
                "expressed over a phrase, as tone or register; the weak pair's credit spread over the span)")  # fmt: skip
        target = ("length=full: any closing phrase (more is never worse)" if self.closing_target == 0 else
                  f"length=full: exactly {self.closing_target} closing phrases, 1 - |c - m| / m (an optimum inside "
                  "the range, as length or detail: amplifying 'more' can overshoot)")  # fmt: skip
        return {"format_span": span, "closing_target": target}

    def __post_init__(self):
        if self.format_span < 1 or self.format_span % 2 == 0:
            raise ValueError(f"format_span must be an odd number >= 1 (a majority decides), got {self.format_span}")
        if self.closing_target < 0:
            raise ValueError(f"closing_target must be >= 0 (0: any closing phrase), got {self.closing_target}")


DEFAULT_SHAPE = WorldShape()


@dataclass
class NoiseRates:
    """Per-response probabilities, drawn independently, that a corpus response violates each preference attribute
    (`format_slip`: the other style; `verbose`: the wrong length), or states a wrong answer (`wrong`)."""

    wrong: float = 0.05
    filler: float = 0.7
    format_slip: float = 0.35
    repetition: float = 0.5
    verbose: float = 0.35


# --- prompts ------------------------------------------------------------------------------------------------------


TEMPLATES = {
    "add": ("Add {a} and {b} .", "What is {a} plus {b} ?"),
    "sort": ("Sort {x} .", "Put {x} in order ."),
    "reverse": ("Reverse {x} .", "Write {x} backwards ."),
    "count": ("Count a in {x} .", "How many a in {x} ?"),
    "max": ("Largest of {x} ?", "Max of {x} ."),
}


def _task_text(family: str, rng: random.Random) -> tuple[str, str]:
    if family not in TEMPLATES:
        raise ValueError(f"unknown task family {family!r}; known: {FAMILIES}")
    template = rng.choice(TEMPLATES[family])
    if family == "add":
        a, b = rng.randrange(NUMBER_RANGE), rng.randrange(NUMBER_RANGE)
        return template.format(a=a, b=b), str(a + b)
    if family in ("sort", "reverse"):
        letters = rng.sample(LETTERS, 3) if family == "sort" else [rng.choice(LETTERS) for _ in range(3)]
        answer = sorted(letters) if family == "sort" else letters[::-1]
        return template.format(x=" ".join(letters)), " ".join(answer)
    if family == "count":
        seq = [rng.choice("ab") for _ in range(rng.randint(4, 7))]
        return template.format(x=" ".join(seq)), str(seq.count("a"))
    nums = rng.sample(range(NUMBER_RANGE), 3)
    return template.format(x=" ".join(map(str, nums))), str(max(nums))


def world_vocabulary(shape: WorldShape = DEFAULT_SHAPE) -> list[str]:
    """Every word the world's prompts and responses can hold (the word tokenizer's vocabulary), in a fixed order; a
    spread format adds its lead words after the original world's (whose vocabulary is unchanged)."""
    words = [str(n) for n in range(2 * NUMBER_RANGE)] + list(LETTERS)
    texts = [t for ts in TEMPLATES.values() for t in ts] + list(FILLERS) + list(CLOSINGS)
    texts += [statement(style, "") for style in STYLES]
    texts += [f"style={s}" for s in STYLES] + [f"length={n}" for n in LENGTHS]
    for text in texts:
        words += [w for w in text.split() if "{" not in w]
    if shape.format_span > 1:
        words += [*TAG_LEAD, *SENTENCE_LEAD]
    return list(dict.fromkeys(words))


def make_task(family: str, rng: random.Random) -> Task:
    """One random task of `family`: its prompt (task text + style and length instructions) and its true answer."""
    text, answer = _task_text(family, rng)
    style, length = rng.choice(STYLES), rng.choice(LENGTHS)
    return Task(family, f"{text} style={style} length={length}", answer, style, length)


def wrong_answer(task: Task, rng: random.Random) -> str:
    """A plausible mistake, never the truth: off by one (numbers), the runner-up (max), an adjacent swap (sort),
    the unreversed sequence (reverse)."""
    if task.family in ("add", "count"):
        return str(int(task.answer) + 1 if task.answer == "0" else int(task.answer) + rng.choice([-1, 1]))
    if task.family == "max":
        nums = sorted(int(x) for x in re.findall(r"\d+", task.prompt))
        return str(nums[-2])
    parts = task.answer.split()
    if task.family == "reverse" and parts[::-1] != parts:
        return " ".join(parts[::-1])
    i = next((i for i in range(len(parts) - 1) if parts[i] != parts[i + 1]), None)
    if i is None:  # all letters equal: change one
        return " ".join(parts[:-1] + ["a" if parts[-1] != "a" else "b"])
    parts[i], parts[i + 1] = parts[i + 1], parts[i]
    return " ".join(parts)


def statement(style: str, answer: str, lead: tuple[str, ...] | None = None) -> str:
    """The answer stated in `style`; with `lead` (a spread format's k lead words) those words, then the answer."""
    if lead is not None:
        return " ".join((*lead, answer))
    return f"Answer: {answer}" if style == "tag" else f"The answer is {answer} ."


def lead_words(style: str, shape: WorldShape) -> tuple[str, ...] | None:
    """The canonical lead of a spread format (k words of `style`'s kind, its first wording); None at span 1."""
    return None if shape.format_span == 1 else ((TAG_LEAD if style == "tag" else SENTENCE_LEAD)[0],) * shape.format_span


def render_response(task: Task, answer: str, style: str, filler: str | None, repeat: bool, closing: str | None,
                    lead: tuple[str, ...] | None = None) -> str:  # fmt: skip
    """Filler, the statement (twice if `repeat`), then `closing` (one or more closing phrases, space-separated)."""
    words = ([filler] if filler else []) + [statement(style, answer, lead)] * (2 if repeat else 1)
    return " ".join(words + ([closing] if closing else []))


def closings(task: Task, shape: WorldShape) -> str | None:
    """The canonical closing: none for length=short; one phrase, or `closing_target` of them, for length=full."""
    return None if task.length == "short" else " ".join([CLOSINGS[0]] * max(1, shape.closing_target))


def canonical_response(task: Task, shape: WorldShape = DEFAULT_SHAPE) -> str:
    """The response every attribute prefers, with the right answer (R_pref = R_cap = 1)."""
    return render_response(task, task.answer, task.style, None, False, closings(task, shape),
                           lead_words(task.style, shape))  # fmt: skip


def one_attribute_worse(task: Task, attribute: str, shape: WorldShape = DEFAULT_SHAPE) -> str:
    """The canonical response with exactly one preference attribute violated (the attribute probes)."""
    other_style = STYLES[1 - STYLES.index(task.style)]
    closing = closings(task, shape)
    args = dict(answer=task.answer, style=task.style, filler=None, repeat=False, closing=closing,
                lead=lead_words(task.style, shape))  # fmt: skip
    if attribute == "format":
        args["style"], args["lead"] = other_style, lead_words(other_style, shape)
    elif attribute == "length":
        args["closing"] = None if closing else " ".join([CLOSINGS[0]] * max(1, shape.closing_target))
    elif attribute == "no_filler":
        args["filler"] = FILLERS[0]
    elif attribute == "no_repetition":
        args["repeat"] = True
    else:
        raise ValueError(f"unknown preference attribute {attribute!r}; known: {PREFERENCE_ATTRIBUTES}")
    return render_response(task, **args)


def noisy_response(task: Task, rates: NoiseRates, rng: random.Random,
                   shape: WorldShape = DEFAULT_SHAPE) -> tuple[str, dict[str, bool]]:  # fmt: skip
    """A pre-alignment response and the noise it carries (each attribute violated independently). With a spread
    format each lead word slips to the other kind apart, at the `format_slip` rate (`noise_format_slip`: the majority
    slipped); with a closing target, a response that closes says 1..m closing phrases."""
    noise = {k: rng.random() < v for k, v in asdict(rates).items()}
    answer = wrong_answer(task, rng) if noise["wrong"] else task.answer
    style = STYLES[1 - STYLES.index(task.style)] if noise["format_slip"] else task.style
    lead = None
    if shape.format_span > 1:  # the draws above stay as they are: the original world's corpus is unchanged
        kinds = [task.style if rng.random() >= rates.format_slip else STYLES[1 - STYLES.index(task.style)]
                 for _ in range(shape.format_span)]  # fmt: skip
        lead = tuple(rng.choice(TAG_LEAD if k == "tag" else SENTENCE_LEAD) for k in kinds)
        noise["format_slip"] = 2 * kinds.count(task.style) < len(kinds)
    wants_closing = (task.length == "full") != noise["verbose"]
    closing = rng.choice(CLOSINGS) if wants_closing else None
    if closing and shape.closing_target > 0:
        closing = " ".join([closing, *(rng.choice(CLOSINGS) for _ in range(rng.randrange(shape.closing_target)))])
    filler = rng.choice(FILLERS) if noise["filler"] else None
    return render_response(task, answer, style, filler, noise["repetition"], closing, lead), noise


# --- the reward channels ------------------------------------------------------------------------------------------


@dataclass
class Judgement:
    """What the judge saw in a response: the channels r_pref, r_cap, `score` = r*, and each attribute."""

    score: float
    r_pref: float
    r_cap: float
    well_formed: bool
    correct: bool
    format_ok: bool
    length_ok: bool
    filler: bool
    repetition: bool


GARBAGE = Judgement(0.0, 0.0, 0.0, False, False, False, False, True, False)
_FILLER_RE = "|".join(re.escape(f) for f in FILLERS)
_CLOSING_RE = "|".join(re.escape(c) for c in CLOSINGS)


def judge(task: Task, response: str, shape: WorldShape = DEFAULT_SHAPE) -> Judgement:
    """Score `response` to `task` on both channels (module docstring); never raises on any string."""
    if not isinstance(response, str):
        return GARBAGE
    text = " ".join(response.split())
    if not text or len(text.split()) > MAX_RESPONSE_WORDS or not text.isascii():
        return GARBAGE
    answer = ANSWER_PATTERNS[task.family]
    if shape.format_span == 1:
        first = rf"(?:Answer: (?P<a1>{answer})|The answer is (?P<a2>{answer}) \.)"
        again = rf"(?:Answer: {answer}|The answer is {answer} \.)"
    else:  # k lead words of either kind, then the answer
        lead = rf"(?:(?:{'|'.join(re.escape(w) for w in TAG_LEAD + SENTENCE_LEAD)}) ){{{shape.format_span}}}"
        first, again = rf"(?P<lead>{lead})(?P<a1>{answer})", rf"{lead}{answer}"
    match = re.fullmatch(rf"(?P<filler>(?:(?:{_FILLER_RE}) )*){first}(?P<rep>(?: {again})*)"
                         rf"(?P<closing>(?: (?:{_CLOSING_RE}))*)", text)  # fmt: skip
    if match is None:
        return GARBAGE
    first = match.group("a1") or match.group("a2")
    if shape.format_span == 1:
        style = "tag" if match.group("a1") else "sentence"
    else:
        tags = sum(w in TAG_LEAD for w in match.group("lead").split())
        style = "tag" if 2 * tags > shape.format_span else "sentence"
    correct = first == task.answer
    n_closings = len(re.findall(_CLOSING_RE, match.group("closing")))
    attributes = {
        "format": style == task.style,
        "length": _length_score(task.length, n_closings, shape.closing_target),
        "no_filler": not match.group("filler"),
        "no_repetition": not match.group("rep"),
    }
    r_pref = sum(attributes.values()) / len(attributes)
    score = round(0.8 * r_pref + 0.2 * correct, 6)
    return Judgement(score, r_pref, float(correct), True, correct, attributes["format"], attributes["length"] == 1.0,
                     not attributes["no_filler"], not attributes["no_repetition"])  # fmt: skip


def _length_score(length: str, n_closings: int, target: int) -> float:
    """length=short: no closing phrase (1 or 0). length=full: at least one (target 0), or 1 - |c - m| / m for c
    closings and target m, at least 0: the optimum lies inside the range and more can be too much."""
    if length == "short" or target == 0:
        return float((n_closings > 0) == (length == "full"))
    return max(0.0, 1.0 - abs(n_closings - target) / target)


def explicit_reward(task: Task, response: str, shape: WorldShape = DEFAULT_SHAPE) -> float:
    return judge(task, response, shape).score


# --- the world's datasets -----------------------------------------------------------------------------------------


@dataclass
class WorldData:
    """Sizes and seed of the world's prompt sets and corpus."""

    seed: int = 0
    corpus_size: int = 8000  # pre-alignment (prompt, response) pairs, all five families
    n_train_prompts: int = 400  # alignment prompts (no held-out family)
    n_eval_prompts: int = 400  # evaluation prompts (alignment families, disjoint from train)
    n_heldout_prompts: int = 500  # held-out family, for capability retention
    noise: NoiseRates = field(default_factory=NoiseRates)
    # how the preferences sit in the tokens (the knobs of the second plan); the default world keeps its key
    shape: WorldShape = field(default=DEFAULT_SHAPE, metadata={"cache": "unless default"})
    # validation prompts (alignment families, disjoint from train and eval, unseen in the corpus): where budgets are
    # tuned; 0 = none (a world built before the split existed keeps its key)
    n_valid_prompts: int = field(default=0, metadata={"cache": "unless default"})


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


TASK_COLUMNS = ("family", "prompt", "answer", "style", "length")


def tasks_to_dataset(tasks: list[Task]) -> Dataset:
    return Dataset.from_dict({c: [getattr(t, c) for t in tasks] for c in TASK_COLUMNS})


def dataset_tasks(ds: Dataset) -> list[Task]:
    return [Task(*row) for row in zip(*(ds[c] for c in TASK_COLUMNS))]


def build_prompt_sets(config: WorldData) -> dict[str, Dataset]:
    """Disjoint train / eval (/ valid) prompts (alignment families) and held-out-family prompts, seeded."""
    rng = random.Random(config.seed)
    train = _unique_tasks(ALIGNMENT_FAMILIES, config.n_train_prompts, rng, set())
    evaluation = _unique_tasks(ALIGNMENT_FAMILIES, config.n_eval_prompts, rng, {t.prompt for t in train})
    heldout = _unique_tasks((HELDOUT_FAMILY,), config.n_heldout_prompts, rng, set())  # 13,680 distinct prompts
    sets = {"train": tasks_to_dataset(train), "eval": tasks_to_dataset(evaluation), "heldout": tasks_to_dataset(heldout)}
    if config.n_valid_prompts:  # drawn last: the other splits are the same with or without it
        taken = {t.prompt for t in train + evaluation}
        sets["valid"] = tasks_to_dataset(_unique_tasks(ALIGNMENT_FAMILIES, config.n_valid_prompts, rng, taken))
    return sets


def build_corpus(config: WorldData, exclude_prompts: set[str] = frozenset()) -> Dataset:
    """The pre-alignment corpus: noisy responses over all five families; evaluation prompts are excluded."""
    rng = random.Random(config.seed + 1)
    rows = {c: [] for c in TASK_COLUMNS + ("completion",)}
    noise_cols = {k: [] for k in asdict(config.noise)}
    while len(rows["prompt"]) < config.corpus_size:
        task = make_task(FAMILIES[len(rows["prompt"]) % len(FAMILIES)], rng)
        if task.prompt in exclude_prompts:
            continue
        response, noise = noisy_response(task, config.noise, rng, config.shape)
        for c in TASK_COLUMNS:
            rows[c].append(getattr(task, c))
        rows["completion"].append(response)
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

    def __init__(self, tasks: dict[str, Task], shape: WorldShape = DEFAULT_SHAPE):
        self.tasks, self.shape = tasks, shape

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        missing = [p for p in prompts if p not in self.tasks]
        if missing:
            raise KeyError(f"the world's reward does not know the prompt {missing[0]!r}")
        return [explicit_reward(self.tasks[p], r, self.shape) for p, r in zip(prompts, responses)]

    def judge(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        return [judge(self.tasks[p], r, self.shape) for p, r in zip(prompts, responses)]

    def channels(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Both reward channels: {"r_pref": [...], "r_cap": [...]} (the evaluation reports them beside r*)."""
        judged = self.judge(prompts, responses)
        return {"r_pref": [j.r_pref for j in judged], "r_cap": [j.r_cap for j in judged]}
