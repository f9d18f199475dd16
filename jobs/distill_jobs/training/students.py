"""A student candidate's starting point: built from a preset or a config, or loaded.

The driver builds it once and saves it (weights and tokenizer) where every worker loads
it, so all ranks start from identical weights whatever their seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_jobs.upstream import StageFailure, first_line


@dataclass(frozen=True)
class InitialStudent:
    uri: str
    parameters: int
    tokenizer_id: str


def build_initial_student(
    candidate: Any, *, directory: Path, seed: int, max_length: int
) -> InitialStudent:
    """Save the candidate's untrained (or pretrained) model and tokenizer in ``directory``.

    Args:
        candidate: a ``StudentCandidate`` of the spec.
        directory: an empty directory to save into.
        seed: seeds the initialisation of built models.
        max_length: longest training sequence; a model with fewer positions is refused.

    Raises:
        StageFailure: the candidate cannot be built or loaded (``StudentInvalid``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    where = f"spec.students.candidates[{candidate.name}]"
    tokenizer = _tokenizer(candidate, where=where)
    try:
        if candidate.pretrained is not None:
            model = AutoModelForCausalLM.from_pretrained(
                _local(candidate.pretrained), dtype=torch.float32
            )
        else:
            config = _config(candidate, tokenizer=tokenizer, where=where)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StageFailure("StudentInvalid", f"{where}: {first_line(error)}") from None
    _check_fits(model, tokenizer=tokenizer, max_length=max_length, where=where)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return InitialStudent(
        uri=str(directory),
        parameters=sum(p.numel() for p in model.parameters()),
        tokenizer_id=saved_tokenizer_identity(directory),
    )


def saved_tokenizer_identity(directory: Path) -> str:
    """The identity of the tokenizer as loaded from disk, the way teachers load theirs
    (a tokenizer built in memory can differ in settings that saving normalises)."""
    from transformers import AutoTokenizer

    from distill_jobs.teachers.generation import tokenizer_identity

    return tokenizer_identity(AutoTokenizer.from_pretrained(directory, padding_side="left"))


def _local(reference: str) -> str:
    return reference.removeprefix("file://").removeprefix("hf://")


def _tokenizer(candidate: Any, *, where: str) -> Any:
    """The candidate's tokenizer: its own setting, the pretrained one's, or the tiny one."""
    from transformers import AutoTokenizer

    from distill_jobs import tiny

    source = candidate.tokenizer or candidate.pretrained
    if source is None:
        preset = tiny.PRESETS.get(candidate.preset or "tiny", tiny.PRESETS["tiny"])
        return tiny.build_tokenizer(seed=tiny.TOKENIZER_SEED, vocab_size=preset.vocab_size)
    path = _local(source)
    if source.startswith(("/", ".", "file://")) and not os.path.isdir(path):
        raise StageFailure("StudentInvalid", f"{where}: tokenizer directory {path} does not exist")
    try:
        return AutoTokenizer.from_pretrained(path, padding_side="left")
    except (OSError, ValueError) as error:
        raise StageFailure(
            "StudentInvalid",
            f"{where}: cannot load a tokenizer from {source} ({first_line(error)})",
        ) from None


def _config(candidate: Any, *, tokenizer: Any, where: str) -> Any:
    from transformers import AutoConfig

    from distill_jobs import tiny

    if candidate.preset is not None:
        if candidate.preset not in tiny.PRESETS:
            raise StageFailure(
                "StudentInvalid",
                f"{where}.preset: unknown preset {candidate.preset!r}; choose one of "
                f"{', '.join(sorted(tiny.PRESETS))}",
            )
        return tiny.model_config(preset=tiny.PRESETS[candidate.preset], tokenizer=tokenizer)
    settings = dict(candidate.config)
    model_type = settings.pop("model_type", None)
    if not model_type:
        raise StageFailure(
            "StudentInvalid", f"{where}.config: needs model_type (e.g. llama), as config.json has"
        )
    settings.setdefault("pad_token_id", tokenizer.pad_token_id)
    settings.setdefault("eos_token_id", tokenizer.eos_token_id)
    return AutoConfig.for_model(model_type, **settings)


def _check_fits(model: Any, *, tokenizer: Any, max_length: int, where: str) -> None:
    vocab = int(model.config.vocab_size)
    if vocab < len(tokenizer):
        raise StageFailure(
            "StudentInvalid",
            f"{where}: the model's vocab_size {vocab} is smaller than its tokenizer "
            f"({len(tokenizer)} tokens)",
        )
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and positions < max_length:
        raise StageFailure(
            "StudentInvalid",
            f"{where}: the model has {positions} positions, fewer than "
            f"spec.students.training.maxSequenceLength ({max_length})",
        )
