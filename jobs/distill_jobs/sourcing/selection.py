"""Which prompts are kept, which are held out, and whether critical slices are covered.

Pure functions of the prompts' ids, slices and signatures, in the order the traffic was
read (the first seen of a group of duplicates is the one kept).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from distill_jobs.sourcing.prompts import NUM_PERM, Signer


@dataclass(frozen=True)
class Candidate:
    """A prompt in traffic order, before de-duplication.

    Attributes:
        position: its row's position in the parsed dataset (how its content is found
            again when the output is written).
        id: its prompt hash.
        slice: its slice.
        group: its near-duplicate group (prompts with the same system text).
        signature: its MinHash values as bytes, or None when near-duplicates are off.
    """

    position: int
    id: str
    slice: str
    group: str = ""
    signature: bytes | None = None


@dataclass(frozen=True)
class Deduplicated:
    kept: tuple[Candidate, ...]
    exact_duplicates: int
    near_duplicates: int


class NearDuplicateIndex:
    """Prompts kept so far, by MinHash LSH, one index per near-duplicate group.

    LSH finds candidates; a candidate counts only if its estimated Jaccard similarity
    really reaches the threshold, so LSH's false positives drop nothing.
    """

    def __init__(self, *, threshold: float) -> None:
        self._threshold = threshold
        self._signer = Signer()
        self._indexes: dict[str, MinHashLSH] = {}
        self._kept: dict[str, MinHash] = {}

    def add_unless_near(self, candidate: Candidate) -> bool:
        """Add the candidate; False (and nothing added) when it nears a kept prompt."""
        if candidate.signature is None:
            raise ValueError(f"prompt {candidate.id} has no near-duplicate signature")
        minhash = self._signer.minhash(candidate.signature)
        index = self._indexes.get(candidate.group)
        if index is None:
            index = MinHashLSH(threshold=self._threshold, num_perm=NUM_PERM)
            self._indexes[candidate.group] = index
        for other in index.query(minhash):
            if minhash.jaccard(self._kept[other]) >= self._threshold:
                return False
        index.insert(candidate.id, minhash)
        self._kept[candidate.id] = minhash
        return True


def deduplicate(candidates: Iterable[Candidate], *, threshold: float) -> Deduplicated:
    """Drop exact duplicates (same id) and near-duplicates, keeping the first seen.

    Args:
        candidates: prompts in traffic order.
        threshold: Jaccard similarity of word shingles from which two prompts are
            near-duplicates; 1.0 drops exact duplicates only.
    """
    seen: set[str] = set()
    near = NearDuplicateIndex(threshold=threshold) if threshold < 1.0 else None
    kept: list[Candidate] = []
    exact_duplicates = near_duplicates = 0
    for candidate in candidates:
        if candidate.id in seen:
            exact_duplicates += 1
            continue
        seen.add(candidate.id)
        if near is not None and not near.add_unless_near(candidate):
            near_duplicates += 1
            continue
        kept.append(candidate)
    return Deduplicated(
        kept=tuple(kept), exact_duplicates=exact_duplicates, near_duplicates=near_duplicates
    )


@dataclass(frozen=True)
class SliceSplit:
    """One slice's prompts, each list in traffic order."""

    train: tuple[Candidate, ...]
    held_out: tuple[Candidate, ...]

    @property
    def size(self) -> int:
        return len(self.train) + len(self.held_out)


def held_out_count(size: int, fraction: float) -> int:
    """How many of a slice's ``size`` prompts are held out: ``fraction`` of them rounded
    half up, at least one when there are two or more, never all of them."""
    if size < 2:
        return 0
    return min(size - 1, max(1, math.floor(size * fraction + 0.5)))


def _rank(seed: int, prompt_id: str) -> str:
    return hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()


def split_by_slice(
    kept: Sequence[Candidate], *, fraction: float, seed: int
) -> dict[str, SliceSplit]:
    """Split each slice into train and held-out, deterministically by ``seed``.

    A prompt's place depends only on the seed, its id and its slice's size, not on the
    order of the traffic or on other slices.

    Args:
        kept: de-duplicated prompts in traffic order.
        fraction: ``heldOutFraction``.
        seed: ``seed``.

    Returns:
        Slice name to its split, slices in order of first appearance.
    """
    by_slice: dict[str, list[Candidate]] = {}
    for candidate in kept:
        by_slice.setdefault(candidate.slice, []).append(candidate)
    splits = {}
    for name, members in by_slice.items():
        count = held_out_count(len(members), fraction)
        ranked = sorted(members, key=lambda candidate: _rank(seed, candidate.id))
        held_out = {candidate.id for candidate in ranked[:count]}
        splits[name] = SliceSplit(
            train=tuple(c for c in members if c.id not in held_out),
            held_out=tuple(c for c in members if c.id in held_out),
        )
    return splits


@dataclass(frozen=True)
class Shortfall:
    """A critical slice with fewer training examples than its minimum."""

    slice: str
    train: int
    min_count: int


@dataclass(frozen=True)
class Coverage:
    """How the critical slices stand after the split.

    Attributes:
        lonely: critical slices with one prompt, which cannot give both a training and a
            held-out example.
        short: critical slices below ``minCount`` that oversampling cannot (or may not) fill.
        copies: slice to how many oversampled copies fill it up to ``minCount``.
    """

    lonely: tuple[str, ...] = ()
    short: tuple[Shortfall, ...] = ()
    copies: Mapping[str, int] = field(default_factory=dict)


def check_coverage(
    splits: Mapping[str, SliceSplit], *, min_counts: Mapping[str, int], allow_oversampling: bool
) -> Coverage:
    """Compare each critical slice's training examples with its ``minCount``.

    Args:
        splits: the split of every slice present.
        min_counts: critical slice name to ``minCount``, in spec order.
        allow_oversampling: ``allowOversampling``: fill a slice with copies instead of
            failing (a slice with no training example has nothing to copy).
    """
    empty = SliceSplit(train=(), held_out=())
    lonely = [name for name in min_counts if splits.get(name, empty).size == 1]
    short, copies = [], {}
    for name, min_count in min_counts.items():
        train = len(splits.get(name, empty).train)
        if train >= min_count:
            continue
        if allow_oversampling and train > 0:
            copies[name] = min_count - train
        else:
            short.append(Shortfall(slice=name, train=train, min_count=min_count))
    return Coverage(lonely=tuple(lonely), short=tuple(short), copies=copies)


def copies_per_prompt(train: Sequence[Candidate], extra: int) -> dict[str, int]:
    """Spread ``extra`` oversampled copies over a slice's training prompts, round-robin
    in traffic order: prompt id to its number of copies (copy numbers 1..n)."""
    if not train:
        return {}
    rounds, remainder = divmod(extra, len(train))
    return {
        candidate.id: rounds + (1 if position < remainder else 0)
        for position, candidate in enumerate(train)
        if rounds or position < remainder
    }
