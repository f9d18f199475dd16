"""Tiny causal LMs built in code, for tests, benchmarks and the students of Iterate.

Nothing is fetched from a hub: a byte-level BPE tokenizer is trained with ``tokenizers``
on a small synthetic corpus, a Llama-style model is initialised from a config of one of
the :data:`PRESETS`, and both are saved the way any Hugging Face model is
(``save_pretrained``, safetensors), so everything downstream loads them through the real
``AutoModelForCausalLM`` / ``AutoTokenizer`` path.

``python -m distill_jobs.tiny --out DIR [--preset tiny] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

BUILD_FILE = "tiny_build.json"
TOKENIZER_SEED = 0  # one shared vocabulary for every tiny model unless asked otherwise
PAD, EOS, BOS = "<|pad|>", "<|end|>", "<|begin|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>")
# One turn per message, then the assistant header when asked for a generation prompt.
# `messages` content may be None (an assistant turn that only called tools).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] or '' }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyPreset:
    """The size of a tiny Llama-style model.

    Attributes:
        hidden_size: width of the residual stream.
        num_hidden_layers: transformer blocks.
        num_attention_heads: attention heads (``hidden_size`` must divide by it).
        intermediate_size: width of the MLP.
        vocab_size: size of the BPE vocabulary the tokenizer is trained to.
        max_position_embeddings: longest sequence (prompt + output) in tokens.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = 512
    max_position_embeddings: int = 1024


# Read-only: a preset table is configuration, never state.
PRESETS: MappingProxyType[str, TinyPreset] = MappingProxyType(
    {
        "tiny": TinyPreset(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
        ),
        "small": TinyPreset(
            hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256
        ),
        "base": TinyPreset(
            hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=512
        ),
    }
)

_WORDS = (
    "the a an of to in is was for on with as by at from that this it and or not are be "
    "question answer what which how many sum total number value list name city color "
    "red green blue small large first last next before after add subtract times plus "
    "minus equals yes no true false json key tool call result error please explain"
)


def synthetic_corpus(*, seed: int, lines: int = 3000) -> list[str]:
    """Short English-like, arithmetic and JSON lines: enough for a BPE vocabulary.

    Args:
        seed: seeds the generator, so the same seed gives the same corpus.
        lines: number of lines.

    Returns:
        The corpus, one string per line.
    """
    rng = random.Random(seed)
    words = _WORDS.split()
    corpus: list[str] = []
    for index in range(lines):
        kind = index % 3
        if kind == 0:
            corpus.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))))
        elif kind == 1:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            corpus.append(f"What is {a} plus {b}? The answer is {a + b}.")
        else:
            key = rng.choice(words)
            corpus.append(json.dumps({key: rng.randint(0, 99), "ok": rng.random() < 0.5}))
    return corpus


def build_tokenizer(*, seed: int, vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer with a chat template, pad and eos tokens.

    Args:
        seed: seeds the training corpus.
        vocab_size: target vocabulary size (special tokens included).

    Returns:
        A ``transformers`` fast tokenizer, left-padding (for batched generation).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, EOS, BOS, *ROLE_TOKENS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(synthetic_corpus(seed=seed), trainer=trainer)
    # transformers 5 saves padding_side only when it is given to the constructor.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=PRESETS["base"].max_position_embeddings,
    )


def model_config(*, preset: TinyPreset, tokenizer: Any) -> Any:
    """A ``LlamaConfig`` of ``preset`` whose special ids match ``tokenizer``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_attention_heads,
        max_position_embeddings=preset.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_model(
    *,
    directory: str | os.PathLike[str],
    seed: int,
    preset: str = "tiny",
    tokenizer_seed: int = TOKENIZER_SEED,
) -> Path:
    """Build (or find already built) a tiny model and its tokenizer in ``directory``.

    Idempotent: a directory that already holds this preset and seed is returned as is.
    The model is written to a temporary sibling and renamed into place, so a crash never
    leaves a half-written model that a later call would take for a finished one.

    Args:
        directory: where the model goes (created).
        seed: seeds the weight initialisation.
        preset: a key of :data:`PRESETS`.
        tokenizer_seed: seeds the tokenizer's corpus. Models built with the same one
            (whatever their seed and preset) share a vocabulary, so a tiny student can
            learn from a tiny teacher's soft labels.

    Returns:
        The directory, loadable with ``from_pretrained``.

    Raises:
        KeyError: ``preset`` is not a known preset.
        FileExistsError: ``directory`` holds something else.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
    target = Path(directory)
    wanted = {
        "preset": preset,
        "seed": seed,
        "tokenizer_seed": tokenizer_seed,
        **asdict(PRESETS[preset]),
    }
    marker = target / BUILD_FILE
    if marker.exists():
        if json.loads(marker.read_text()) == wanted:
            return target
        raise FileExistsError(f"{target} holds a different model ({marker.read_text()})")
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty and holds no tiny model")

    tokenizer = build_tokenizer(seed=tokenizer_seed, vocab_size=PRESETS[preset].vocab_size)
    config = model_config(preset=PRESETS[preset], tokenizer=tokenizer)
    with torch.random.fork_rng(devices=[]):  # seeded here without touching the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    # Greedy unless a caller asks otherwise; no sampling defaults hidden in the model.
    model.generation_config = GenerationConfig(
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        bos_token_id=config.bos_token_id,
        do_sample=False,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / BUILD_FILE).write_text(json.dumps(wanted, indent=2))
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m distill_jobs.tiny --out DIR``: build a tiny model and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", required=True, help="directory to write the model to")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_model(directory=args.out, seed=args.seed, preset=args.preset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
