"""A synthetic support-ticket task with a rare critical slice, and a teacher trained on it.

The demo and the quality benchmark need a task whose answers are known, a teacher that
is genuinely good at it, and a slice that is rare in traffic but matters: here, tickets
are routed to one of ten intents or to ``refund-fraud`` (about 3% of traffic). Every
ticket is built from templates with varied slot fillers and noise words, so tickets are
distinct and never near-duplicates of each other (Source would drop those), and its
intent is decided by keywords that only that intent's phrases use (:func:`decide_intent`),
so a small model can learn it.

- :func:`write_traffic` writes chat-JSONL traffic (``slice`` and ``reference`` fields).
- :func:`train_teacher` fine-tunes a :mod:`distill_jobs.tiny` model on a sample of its
  own (another seed than the traffic's) with a plain torch loop, optionally blind to
  some intents (a deliberately flawed teacher), and caches it by its settings.
- :func:`build_off_the_shelf` is a cheap model trained on generic text only: the
  alternative that Investigate finds short of the bar.

``python -m distill_jobs.synthetic --out DIR [--rows N] [--seed S] [--teacher-preset base]
[--cache DIR]`` writes ``DIR/teacher``, ``DIR/off-the-shelf`` and ``DIR/traffic/*.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from distill_jobs import tiny

RARE_INTENT = "refund-fraud"
RARE_SHARE = 0.03
TRAFFIC_STREAM, TEACHER_STREAM, EVALUATION_STREAM = "traffic", "teacher", "evaluation"
TEACHER_BUILD_FILE = "teacher_build.json"
OFF_THE_SHELF_BUILD_FILE = "off_the_shelf_build.json"
BUCKET_BATCHES = 8  # batches sorted by length together (less padding per step)

# Per intent: the keywords that decide it (no other intent's phrases use them) and the
# phrases a ticket states its problem with (each holds at least one of those keywords).
# fmt: off
_PHRASES: MappingProxyType[str, tuple[str, tuple[str, ...]]] = MappingProxyType({
    "billing": ("bill fee invoice overcharged statement", (
        "my invoice shows the wrong amount",
        "I was overcharged on my last bill",
        "there is an extra fee on my monthly statement",
        "the invoice total does not match my plan",
        "why did my bill go up this month",
        "I need a copy of my invoice",
        "the statement lists a fee I never agreed to",
    )),
    "shipping": ("courier delivered delivery package parcel tracking", (
        "my package has not arrived yet",
        "the tracking page shows no movement",
        "when will my parcel be delivered",
        "the courier never showed up",
        "the delivery is late by a week",
        "can you speed up the delivery",
        "tracking says delivered but nothing came",
    )),
    "login": ("locked log password sign username", (
        "I cannot log in to my account",
        "the password reset email never arrives",
        "it says my username is locked",
        "the sign in page keeps looping",
        "I forgot my password",
        "my account got locked after three tries",
    )),
    "cancel": ("cancel membership terminate unsubscribe", (
        "please cancel my subscription",
        "I want to cancel the order before it ships",
        "how do I end my membership",
        "terminate my contract please",
        "unsubscribe me from the monthly box",
        "I no longer want the service so cancel it",
    )),
    "returns": ("back exchange label return", (
        "I want to return the item",
        "how do I send this back",
        "it does not fit and I want to exchange it",
        "can I get a return label",
        "I would like to swap it for another size, an exchange",
        "where do I drop off a return",
    )),
    "warranty": ("defect faulty repair stopped warranty", (
        "is my device still under warranty",
        "the motor stopped working after two months",
        "can you repair the faulty unit",
        "it has a manufacturing defect",
        "the screen stopped working, does the warranty cover it",
        "who handles repair of a faulty part",
    )),
    "address": ("address apartment moved postcode street", (
        "I need to change my address",
        "I moved to a new apartment",
        "update the street name on my profile",
        "the postcode on my profile is wrong",
        "please use my new address from now on",
        "I moved and the street number changed",
    )),
    "payment": ("checkout declined payment paypal visa", (
        "my card was declined at checkout",
        "the payment failed twice",
        "can I pay with paypal",
        "the checkout will not accept my visa",
        "payment keeps getting declined",
        "which payment methods do you take",
    )),
    "technical": ("app bug crashes error freezes website", (
        "the app crashes when I open it",
        "the website shows an error page",
        "the app freezes on startup",
        "I get error code 503",
        "there is a bug in the website search",
        "the website freezes when I scroll",
    )),
    "feedback": ("compliment feedback friendly love suggestion", (
        "I just want to say your staff were friendly",
        "I have a suggestion for your store",
        "I love the new design",
        "a compliment to the team",
        "some feedback on the new menu",
        "your support agent was so friendly",
    )),
    "refund-fraud": ("fraudulent refund refunds scam stolen unauthorized", (
        "someone asked for a refund on my account that I never made",
        "a refund went to a card I do not recognise",
        "a scam is claiming refunds with my stolen card",
        "there are unauthorized refunds on my account",
        "a fraudulent refund request was made in my name",
        "my stolen card was used to claim a refund",
        "I think this refund is a scam, it was not me",
    )),
})  # read-only: configuration, never state
# fmt: on
INTENTS: MappingProxyType[str, tuple[frozenset[str], tuple[str, ...]]] = MappingProxyType(
    {name: (frozenset(keys.split()), cues) for name, (keys, cues) in _PHRASES.items()}
)

# Slot fillers and noise: none of them is a keyword of any intent.
_PRODUCTS = (
    "blue kettle", "running shoes", "desk lamp", "coffee grinder", "winter jacket",
    "yoga mat", "phone case", "gaming mouse", "rice cooker", "wool scarf", "backpack",
    "air fryer", "standing desk", "speaker", "stroller", "garden hose", "water bottle",
    "office chair", "camera bag", "toaster", "headphones", "blender", "raincoat", "tent",
)  # fmt: skip
_WHEN = (
    "yesterday", "last week", "on monday", "on tuesday", "on friday", "this morning",
    "two days ago", "last night", "over the weekend", "a month ago", "today", "earlier",
)  # fmt: skip
_NAMES = (
    "Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Priya", "Jonas", "Chloe", "Diego",
    "Fatima", "Ivan", "Mei", "Noah", "Sara", "Yusuf", "Elena", "Ravi", "Zoe", "Ben",
)  # fmt: skip
_GREETINGS = ("hi", "hello", "hey team", "good morning", "dear support", "hi there", "hey")
_CLOSINGS = (
    "thanks", "thank you", "cheers", "please help", "asap please", "regards",
    "many thanks", "help!", "any news?", "thx",
)  # fmt: skip
_NOISE = (
    "honestly", "really", "um", "again", "so", "just", "quickly", "kindly", "btw", "ok",
    "actually", "also", "still", "now", "lol", "hmm",
)  # fmt: skip
# Every ticket names an order, a reference or a customer: besides being what tickets do,
# it makes two tickets (from any two streams) the same text only by a negligible chance.
_IDENTIFIERS: tuple[Callable[[random.Random], str], ...] = (
    lambda rng: f"order {rng.randint(10000, 99999)}",
    lambda rng: f"order #{rng.randint(1000, 9999999)}",
    lambda rng: f"ref {rng.choice('ABCDEFGHJK')}{rng.randint(100, 99999)}",
    lambda rng: f"customer id {rng.randint(100000, 999999)}",
    lambda rng: f"ticket {rng.randint(10000, 99999)}",
)
_ABOUT: tuple[Callable[[random.Random], str], ...] = (
    lambda rng: f"re: the {rng.choice(_PRODUCTS)}",
    lambda rng: f"about the {rng.choice(_PRODUCTS)} I got {rng.choice(_WHEN)}",
    lambda rng: f"the {rng.choice(_PRODUCTS)}",
)


@dataclass(frozen=True)
class Ticket:
    """One support ticket: what the customer wrote and the intent it is routed to."""

    text: str
    intent: str


def decide_intent(text: str) -> str | None:
    """The intent whose keywords the text uses, or None when none or several do."""
    words = {word.strip(".,:;!?()#'\"").lower() for word in text.split()}
    found = {intent for intent, (keywords, _) in INTENTS.items() if words & keywords}
    return found.pop() if len(found) == 1 else None


def make_ticket(intent: str, rng: random.Random) -> Ticket:
    """A ticket of ``intent``: its problem phrase and an identifier (with a product, at
    times), between an optional greeting, closing and signature, with a few noise words
    scattered in."""
    cue = rng.choice(INTENTS[intent][1])
    context = rng.choice(_IDENTIFIERS)(rng)
    if rng.random() < 0.4:
        about = rng.choice(_ABOUT)(rng)
        context = f"{about}, {context}" if rng.random() < 0.5 else f"{context}, {about}"
    parts = [f"{context}:", cue] if rng.random() < 0.5 else [cue, f"({context})"]
    if rng.random() < 0.3:
        parts.append(f"since {rng.choice(_WHEN)}")
    if rng.random() < 0.6:
        parts.insert(0, f"{rng.choice(_GREETINGS)},")
    if rng.random() < 0.6:
        parts.append(rng.choice(_CLOSINGS))
    if rng.random() < 0.4:
        parts.append(rng.choice(_NAMES))
    words = " ".join(parts).split()
    for _ in range(rng.choice((0, 1, 1, 2))):
        words.insert(rng.randint(0, len(words)), rng.choice(_NOISE))
    return Ticket(text=" ".join(words), intent=intent)


def stream(name: str, seed: int) -> random.Random:
    """An independent generator per (purpose, seed): traffic, the teacher's own sample and
    evaluation prompts never share a sequence of draws."""
    return random.Random(f"{name}:{seed}")


def generate_tickets(
    *,
    count: int,
    rng: random.Random,
    rare_share: float | None = RARE_SHARE,
    intents: Sequence[str] | None = None,
) -> list[Ticket]:
    """``count`` distinct tickets in random order.

    Args:
        count: tickets to make.
        rng: the generator (see :func:`stream`).
        rare_share: share of :data:`RARE_INTENT` tickets (rounded to a whole number);
            the others are spread uniformly over the remaining intents. ``None`` spreads
            every intent uniformly.
        intents: the intents to draw from (default: all).
    """
    chosen = list(intents or INTENTS)
    if rare_share is None or RARE_INTENT not in chosen:
        labels = [rng.choice(chosen) for _ in range(count)]
    else:
        common = [name for name in chosen if name != RARE_INTENT]
        rare = round(count * rare_share)
        labels = [RARE_INTENT] * rare + [rng.choice(common) for _ in range(count - rare)]
    rng.shuffle(labels)
    seen: set[str] = set()
    tickets: list[Ticket] = []
    for intent in labels:
        ticket = make_ticket(intent, rng)
        while ticket.text.casefold() in seen:  # rare: a bare phrase drawn twice
            ticket = make_ticket(intent, rng)
        seen.add(ticket.text.casefold())
        tickets.append(ticket)
    return tickets


def traffic_record(ticket: Ticket) -> dict[str, Any]:
    """A chat-JSONL traffic row: the user turn, its slice and its known answer."""
    return {
        "messages": [{"role": "user", "content": ticket.text}],
        "slice": ticket.intent,
        "reference": ticket.intent,
    }


def write_traffic(
    directory: str | os.PathLike[str],
    *,
    rows: int,
    seed: int,
    rare_share: float = RARE_SHARE,
    files: int = 2,
) -> list[Path]:
    """Write ``rows`` tickets as chat-JSONL traffic, split over ``files`` files.

    Returns:
        The files written (``traffic-00.jsonl``, ...).
    """
    tickets = generate_tickets(count=rows, rng=stream(TRAFFIC_STREAM, seed), rare_share=rare_share)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    per_file = math.ceil(rows / files)
    for index in range(files):
        part = tickets[index * per_file : (index + 1) * per_file]
        path = target / f"traffic-{index:02d}.jsonl"
        path.write_text("".join(json.dumps(traffic_record(t)) + "\n" for t in part))
        paths.append(path)
    return paths


# --- the teacher -------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherRecipe:
    """How a teacher is trained; its JSON (with the task's own digest) is its cache key.

    Attributes:
        preset: a :data:`distill_jobs.tiny.PRESETS` key.
        seed: seeds the weights, the teacher's own sample and the data order.
        sample: distinct tickets in the teacher's training sample (intents uniform).
        steps: optimizer steps.
        batch_size: tickets per step.
        learning_rate: AdamW's peak learning rate (linear warm-up, cosine decay).
        warmup_steps: steps of linear warm-up.
        blind_slices: intents the teacher never sees in training.
    """

    preset: str = "base"
    seed: int = 0
    sample: int = 4000
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    blind_slices: tuple[str, ...] = ()

    def key(self) -> str:
        document = {**asdict(self), "task": task_digest(), "tokenizer": tiny.TOKENIZER_SEED}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainedTeacher:
    """A teacher on disk and what it took."""

    path: Path
    parameters: int
    seconds: float
    cached: bool
    final_loss: float


def task_digest() -> str:
    """A digest of the task as it is generated (phrases, fillers, structure, shares): a
    teacher cached for an older version of the task is never reused."""
    tickets = generate_tickets(count=500, rng=stream("digest", 0))
    document = [[ticket.text, ticket.intent] for ticket in tickets]
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()[:16]


def train_teacher(
    directory: str | os.PathLike[str],
    *,
    preset: str = "base",
    seed: int = 0,
    sample: int = 4000,
    steps: int = 200,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    warmup_steps: int = 20,
    blind_slices: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedTeacher:
    """Fine-tune a tiny-family model on its own synthetic sample and save it in ``directory``.

    The loss is on the answer tokens only, with the prompt formatted the way
    :class:`~distill_jobs.teachers.generation.LocalGenerator` prompts (the chat template
    with the generation prompt, then the answer and the end token).

    Args:
        directory: where the teacher goes (absent or empty; one that already holds this
            very teacher is returned as is).
        preset, seed, sample, steps, batch_size, learning_rate, warmup_steps: see
            :class:`TeacherRecipe`.
        blind_slices: intents left out of the teacher's sample: it answers them wrongly.
        cache_dir: where trained teachers are kept by recipe and re-used.
        log: called with a line per hundred steps.

    Raises:
        KeyError: an unknown preset or intent.
        FileExistsError: ``directory`` (or the cache entry) holds something else.
    """
    blind = tuple(sorted(set(blind_slices)))
    unknown = [name for name in blind if name not in INTENTS]
    if unknown or preset not in tiny.PRESETS:
        raise KeyError(f"unknown preset {preset!r} or intents {unknown}")
    recipe = TeacherRecipe(
        preset=preset, seed=seed, sample=sample, steps=steps, batch_size=batch_size,
        learning_rate=learning_rate, warmup_steps=warmup_steps, blind_slices=blind,
    )  # fmt: skip
    target = Path(directory)
    cached = Path(cache_dir) / f"teacher-{recipe.key()}" if cache_dir is not None else None
    if (existing := _built(target, recipe=recipe)) is not None:
        return _trained(target, existing, cached=True)
    if cached is not None and (stored := _built(cached, recipe=recipe)) is not None:
        _copy_model(cached, target)
        return _trained(target, stored, cached=True)
    build = _train(recipe, target=cached or target, log=log)
    if cached is not None:
        _copy_model(cached, target)
    return _trained(target, build, cached=False)


def _built(directory: Path, *, recipe: TeacherRecipe) -> dict[str, Any] | None:
    """The build record of the teacher in ``directory`` if it is this recipe's, None when
    there is none; another recipe's teacher there is an error, never overwritten."""
    marker = directory / TEACHER_BUILD_FILE
    if not marker.exists():
        return None
    build: dict[str, Any] = json.loads(marker.read_text())
    if build.get("key") != recipe.key():
        raise FileExistsError(f"{directory} holds another teacher (recipe {build.get('key')})")
    return build


def _trained(path: Path, build: dict[str, Any], *, cached: bool) -> TrainedTeacher:
    return TrainedTeacher(
        path=path, parameters=build["parameters"], seconds=build["seconds"], cached=cached,
        final_loss=build["final_loss"],
    )  # fmt: skip


def _copy_model(source: Path, target: Path) -> None:
    """Copy a finished model into ``target`` (absent or empty), staged and renamed into
    place so that a crash never leaves a half-copied teacher behind."""
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _train(
    recipe: TeacherRecipe, *, target: Path, log: Callable[[str], None] | None
) -> dict[str, Any]:
    """Build, train and save the teacher into ``target`` (staged, renamed into place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        initial = tiny.build_tiny_model(
            directory=staging / "init", seed=recipe.seed, preset=recipe.preset
        )
        tokenizer = AutoTokenizer.from_pretrained(initial, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(initial, dtype=torch.float32)
        intents = [name for name in INTENTS if name not in recipe.blind_slices]
        tickets = generate_tickets(
            count=recipe.sample, rng=stream(TEACHER_STREAM, recipe.seed), rare_share=None,
            intents=intents,
        )  # fmt: skip
        examples = encode(tickets, tokenizer=tokenizer)
        final_loss = fit(model, examples, recipe=recipe, pad_id=tokenizer.pad_token_id, log=log)
        final = staging / "model"
        model.save_pretrained(final, safe_serialization=True)
        tokenizer.save_pretrained(final)
        seconds = time.perf_counter() - started
        build = {
            **asdict(recipe),
            "key": recipe.key(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(seconds, 2),
            "final_loss": round(final_loss, 5),
        }
        (final / TEACHER_BUILD_FILE).write_text(json.dumps(build, indent=2))
        if target.exists():
            target.rmdir()  # must be empty: a model is never written over another
        final.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return build


Example = tuple[list[int], list[int]]  # input ids, labels (-100 on the prompt)


def encode(tickets: Sequence[Ticket], *, tokenizer: Any) -> list[Example]:
    """Prompt (chat template with the generation prompt) + answer + end token; only the
    answer and the end token are labelled."""
    conversations = [[{"role": "user", "content": t.text}] for t in tickets]
    prompts = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answers = {
        name: [*tokenizer(name, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        for name in INTENTS
    }
    return [
        (ids + answers[t.intent], [-100] * len(ids) + answers[t.intent])
        for ids, t in zip(prompt_ids, tickets, strict=True)
    ]


def fit(
    model: Any,
    examples: Sequence[Example],
    *,
    recipe: TeacherRecipe,
    pad_id: int,
    log: Callable[[str], None] | None = None,
) -> float:
    """Plain single-process AdamW training over shuffled epochs; returns the last loss."""
    import torch

    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)

    def rate(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    losses: list[float] = []
    batches = _batches(
        [len(ids) for ids, _ in examples], size=recipe.batch_size, generator=generator
    )
    for step, batch in zip(range(recipe.steps), batches, strict=False):
        input_ids, labels, mask = _collate([examples[i] for i in batch], pad_id=pad_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % 100 == 0:
            log(f"step {step + 1}/{recipe.steps} loss {sum(losses[-100:]) / 100:.4f}")
    model.eval()
    tail = losses[-10:]
    return sum(tail) / len(tail)


def _batches(lengths: Sequence[int], *, size: int, generator: Any) -> Iterator[list[int]]:
    """Endless shuffled epochs of batches of similar lengths: each run of
    :data:`BUCKET_BATCHES` batches is sorted by length before it is cut, so little of a
    step is spent on padding; the batches are then shuffled again."""
    import torch

    while True:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        for start in range(0, len(order), size * BUCKET_BATCHES):
            run = sorted(order[start : start + size * BUCKET_BATCHES], key=lengths.__getitem__)
            cut = [run[i : i + size] for i in range(0, len(run), size)]
            for index in torch.randperm(len(cut), generator=generator).tolist():
                yield cut[index]


def _collate(batch: Sequence[Example], *, pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded tensors (positions start at 0, as left-padded generation computes)."""
    import torch

    length = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, (ids, targets) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(targets)
        mask[row, : len(ids)] = 1
    return input_ids, labels, mask


# --- measuring and the off-the-shelf alternative -------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Exact match of a model's greedy answers, overall and per intent."""

    exact_match: float
    by_slice: dict[str, float]
    count: int


def evaluate(
    model_dir: str | os.PathLike[str], tickets: Sequence[Ticket], *, batch_size: int = 64
) -> Evaluation:
    """Answer ``tickets`` greedily with the model in ``model_dir``, the way Teach and the
    students' measurement do (:class:`~distill_jobs.teachers.generation.LocalGenerator`),
    and score exact match against the intents."""
    from distill_jobs.metrics import exact_match
    from distill_jobs.teachers.generation import LocalGenerator

    generator = LocalGenerator.load(model=str(model_dir), device="cpu")
    longest = max(len(generator.tokenizer(name)["input_ids"]) for name in INTENTS) + 1
    hits: dict[str, list[float]] = defaultdict(list)
    for start in range(0, len(tickets), batch_size):
        batch = tickets[start : start + batch_size]
        generations = generator.generate(
            conversations=[[{"role": "user", "content": t.text}] for t in batch],
            max_new_tokens=longest,
        )
        for ticket, generation in zip(batch, generations, strict=True):
            hits[ticket.intent].append(exact_match(generation.text, ticket.intent))
    total = [hit for slice_hits in hits.values() for hit in slice_hits]
    return Evaluation(
        exact_match=sum(total) / len(total),
        by_slice={name: sum(h) / len(h) for name, h in sorted(hits.items())},
        count=len(total),
    )


def held_out_tickets(*, count: int, seed: int, rare_share: float = 0.1) -> list[Ticket]:
    """Fresh tickets from a stream of their own (neither traffic nor any teacher sample),
    with the rare intent raised to ``rare_share`` so its score is measured on enough."""
    return generate_tickets(count=count, rng=stream(EVALUATION_STREAM, seed), rare_share=rare_share)


def build_off_the_shelf(
    directory: str | os.PathLike[str], *, seed: int = 0, steps: int = 60
) -> Path:
    """A ``tiny`` model trained only on generic text (never on tickets): cheap, fluent in
    its corpus, and wrong on the task, so Investigate has a real alternative to reject.

    Idempotent, like :func:`~distill_jobs.tiny.build_tiny_model`: a directory that
    already holds this model is returned as is.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(directory)
    wanted = {"kind": "off-the-shelf", "preset": "tiny", "seed": seed, "steps": steps}
    marker = target / OFF_THE_SHELF_BUILD_FILE
    if marker.exists():
        if json.loads(marker.read_text()) == wanted:
            return target
        raise FileExistsError(f"{target} holds a different model ({marker.read_text()})")
    with tempfile.TemporaryDirectory(prefix="distill-off-the-shelf-") as staging:
        initial = tiny.build_tiny_model(directory=Path(staging) / "init", seed=seed)
        tokenizer = AutoTokenizer.from_pretrained(initial, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(initial, dtype=torch.float32)
        corpus = tiny.synthetic_corpus(seed=seed + 1, lines=steps * 16)
        ids = tokenizer(corpus, add_special_tokens=False)["input_ids"]
        examples = [([*row, tokenizer.eos_token_id],) * 2 for row in ids]
        recipe = TeacherRecipe(preset="tiny", seed=seed, steps=steps, batch_size=16, warmup_steps=5)
        fit(model, examples, recipe=recipe, pad_id=tokenizer.pad_token_id)
        built = Path(staging) / "model"
        model.save_pretrained(built, safe_serialization=True)
        tokenizer.save_pretrained(built)
        (built / OFF_THE_SHELF_BUILD_FILE).write_text(json.dumps(wanted, indent=2))
        _copy_model(built, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m distill_jobs.synthetic --out DIR``: traffic, a teacher, an alternative."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", required=True, help="directory to write everything to")
    parser.add_argument("--rows", type=int, default=1000, help="traffic rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the traffic")
    parser.add_argument("--teacher-preset", default="base", choices=sorted(tiny.PRESETS))
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--teacher-steps", type=int, default=TeacherRecipe.steps)
    parser.add_argument("--blind-slice", action="append", default=[], help="repeatable")
    parser.add_argument("--cache", default=None, help="directory of cached teachers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--evaluate", type=int, default=0, help="held-out tickets to score")
    args = parser.parse_args(argv)

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    paths = write_traffic(out / "traffic", rows=args.rows, seed=args.seed)
    shares = Counter(json.loads(line)["slice"] for p in paths for line in p.open())
    print(f"traffic: {args.rows} rows in {len(paths)} files, {shares[RARE_INTENT]} "
          f"{RARE_INTENT} ({time.perf_counter() - started:.1f} s)")  # fmt: skip
    teacher = train_teacher(
        out / "teacher", preset=args.teacher_preset, seed=args.teacher_seed,
        steps=args.teacher_steps, blind_slices=args.blind_slice, cache_dir=args.cache,
        log=lambda line: print(f"  teacher {line}", flush=True),
    )  # fmt: skip
    how = "from the cache" if teacher.cached else "trained"
    print(f"teacher: {teacher.path} ({args.teacher_preset}, {teacher.parameters:,} "
          f"parameters), {how}, {teacher.seconds:.1f} s to train, "
          f"final loss {teacher.final_loss:.4f}")  # fmt: skip
    started = time.perf_counter()
    alternative = build_off_the_shelf(out / "off-the-shelf", seed=args.teacher_seed)
    print(f"off-the-shelf: {alternative} ({time.perf_counter() - started:.1f} s)")
    if args.evaluate:
        tickets = held_out_tickets(count=args.evaluate, seed=args.seed)
        for name, path in (("teacher", teacher.path), ("off-the-shelf", alternative)):
            started = time.perf_counter()
            scored = evaluate(path, tickets)
            print(f"{name}: exact match {scored.exact_match:.3f} on {scored.count} held-out "
                  f"tickets, {RARE_INTENT} {scored.by_slice.get(RARE_INTENT, 0.0):.3f} "
                  f"({time.perf_counter() - started:.1f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
