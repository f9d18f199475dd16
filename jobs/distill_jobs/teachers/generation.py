"""Generation with a local Hugging Face causal LM, batched, with per-position logprobs.

:class:`LocalGenerator` is the one place that turns chat conversations into outputs
with logprobs; the ``hf`` teacher calls it directly and the local API server
(:mod:`distill_jobs.apiserver`) through a :class:`Batcher`, which groups requests that
arrive together into one call. What a local teacher and a served one return cannot
drift apart.

torch and transformers are imported inside functions: importing this module (e.g. to
check a model path before starting workers) stays cheap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from distill_jobs.records import TokenLogprob
from distill_jobs.teachers.errors import ModelNotAvailableError

HUB_PREFIX = "hf://"
_TOP_LOGPROBS = TypeAdapter(list[list[TokenLogprob]])


def check_model_dir(model: str) -> None:
    """Refuse a model reference that is a path (absolute, ``./``, ``file://``) to nothing.

    Cheap and torch-free, so a caller can check before starting workers; hub names are
    only checked by loading them.

    Raises:
        ModelNotAvailableError: the directory does not exist.
    """
    ref = model.removeprefix("file://")
    if ref.startswith(("/", ".")) and not Path(ref).is_dir():
        raise ModelNotAvailableError(f"teacher model directory {ref} does not exist")


def load_causal_lm(*, model: str, device: str | None = None) -> tuple[Any, Any]:
    """Load a causal LM and its (left-padding) tokenizer from a directory or the hub.

    Args:
        model: a local directory (``file://`` allowed), or ``hf://org/name`` (a bare
            ``org/name`` that is not a directory is taken as a hub name too).
        device: ``cuda``, ``cpu``...; by default a GPU when there is one.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.

    Raises:
        ModelNotAvailableError: no such directory, and the hub name is not in the local
            cache (with ``HF_HUB_OFFLINE=1`` nothing is downloaded).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(model)
    name = model.removeprefix("file://").removeprefix(HUB_PREFIX)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        # Left padding: batched generation appends to the right end of every row.
        tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left")
        causal_lm = AutoModelForCausalLM.from_pretrained(
            name, dtype="auto" if device.startswith("cuda") else torch.float32
        )
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        hint = (
            "the hub is unreachable from here (HF_HUB_OFFLINE=1), so it must already be in "
            "the local Hugging Face cache (run `hf download` where the hub is reachable), "
            "or give a directory"
            if offline
            else "check the name, or give a directory"
        )
        raise ModelNotAvailableError(f"cannot load {model!r}: {hint} ({error})") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return causal_lm.to(device).eval(), tokenizer


def tokenizer_identity(tokenizer: Any) -> str:
    """``sha256:<16 hex>`` of the tokenizer's full definition (vocabulary, merges, ...).

    Soft labels are only usable by a student with the very same vocabulary; two
    tokenizers with equal identities tokenize identically, wherever they are stored.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Padding and truncation are call-time state (a padded batch switches them on),
        # not part of how text becomes tokens.
        document = json.loads(backend.to_str())
        document.pop("padding", None)
        document.pop("truncation", None)
        definition = json.dumps(document, sort_keys=True)
    else:
        # A tokenizer without a `tokenizers` backend: its vocabulary is what can be compared.
        definition = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return f"sha256:{hashlib.sha256(definition.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Generation:
    """One generated output.

    Attributes:
        text: the output, special tokens removed.
        token_ids: output token ids, the end-of-sequence token excluded.
        token_logprobs: logprob of each output token.
        top_logprobs: per output token, the top-k candidates (None when k is 0).
        finish_reason: ``stop`` (end-of-sequence) or ``length`` (hit the limit).
        prompt_tokens: tokens of the prompt.
        output_tokens: tokens generated, the end-of-sequence token included.
        token_entropies: entropy (nats) of the full next-token distribution at each
            output position, when asked for (None otherwise).
    """

    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    top_logprobs: list[list[TokenLogprob]] | None
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    token_entropies: list[float] | None = None


class LocalGenerator:
    """Batched chat generation with per-position logprobs from a local causal LM."""

    def __init__(self, *, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        vocab = max(len(tokenizer), model.config.vocab_size)
        # Token id -> its text, decoded once: per-candidate decoding would dominate.
        self._token_text = tokenizer.batch_decode([[i] for i in range(vocab)])
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0)) or None

    @classmethod
    def load(cls, *, model: str, device: str | None = None) -> LocalGenerator:
        """Load ``model`` (see :func:`load_causal_lm`)."""
        causal_lm, tokenizer = load_causal_lm(model=model, device=device)
        return cls(model=causal_lm, tokenizer=tokenizer)

    def token_text(self, token_id: int) -> str:
        return self._token_text[token_id] if token_id < len(self._token_text) else ""

    def prompt_lengths(self, *, conversations: Sequence[list[dict[str, Any]]]) -> list[int]:
        """Tokens of each conversation's prompt (chat template applied)."""
        ids = self.tokenizer.apply_chat_template(
            list(conversations), add_generation_prompt=True, return_dict=False
        )
        return [len(row) for row in ids]

    def generate(
        self,
        *,
        conversations: Sequence[list[dict[str, Any]]],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int = 0,
        entropies: bool = False,
    ) -> list[Generation]:
        """Answer every conversation in one batched ``generate``.

        Args:
            conversations: chat messages per prompt, up to the last user turn.
            max_new_tokens: generation limit.
            temperature: 0 is greedy; above 0 samples (no top-k/top-p truncation).
            top_k: candidates kept per output position (0: no top logprobs).
            entropies: also compute each output position's entropy over the whole
                vocabulary (``-sum p log p`` of the raw logits' softmax, in nats).

        Returns:
            One :class:`Generation` per conversation, in order.
        """
        import torch

        tokenizer = self.tokenizer
        encoded = tokenizer.apply_chat_template(
            list(conversations),
            add_generation_prompt=True,
            padding=True,
            return_tensors="pt",
            return_dict=True,
        ).to(self.model.device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            if temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                # Raw logits, not the processed scores: soft labels are the model's own
                # distribution, whatever temperature picked the tokens.
                output_logits=True,
                return_dict_in_generate=True,
                **sampling,
            )
            new_tokens = out.sequences[:, encoded["input_ids"].shape[1] :]
            chosen, top_values, top_ids, entropy = [], [], [], []
            for step, logits in enumerate(out.logits):
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                chosen.append(logprobs.gather(1, new_tokens[:, step : step + 1]).squeeze(1))
                if entropies:
                    # entr(p) = -p log p, and 0 where p is 0 (no 0 * -inf).
                    entropy.append(torch.special.entr(logprobs.exp()).sum(dim=-1))
                if top_k > 0:
                    values, ids = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
                    top_values.append(values)
                    top_ids.append(ids)
        prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        rows = new_tokens.tolist()
        chosen_rows = torch.stack(chosen, dim=1).tolist()
        top = (
            (torch.stack(top_values, dim=1).tolist(), torch.stack(top_ids, dim=1).tolist())
            if top_k > 0
            else None
        )
        entropy_rows = torch.stack(entropy, dim=1).tolist() if entropies else None
        return [
            self._generation(
                row=rows[i],
                chosen=chosen_rows[i],
                top=(top[0][i], top[1][i]) if top else None,
                prompt_tokens=int(prompt_tokens[i]),
                entropy=entropy_rows[i] if entropy_rows is not None else None,
            )
            for i in range(len(rows))
        ]

    def _generation(
        self,
        *,
        row: list[int],
        chosen: list[float],
        top: tuple[list[list[float]], list[list[int]]] | None,
        prompt_tokens: int,
        entropy: list[float] | None = None,
    ) -> Generation:
        eos = self.tokenizer.eos_token_id
        stop = row.index(eos) if eos in row else None
        length = len(row) if stop is None else stop
        top_logprobs = None
        if top is not None:
            values, ids = top
            text = self.token_text
            # Tens of thousands of candidates per batch: validated in one call from plain
            # dicts (pydantic's core), twice as fast as constructing them one by one.
            top_logprobs = _TOP_LOGPROBS.validate_python(
                [
                    [
                        {"token": text(t), "token_id": t, "logprob": v}
                        for v, t in zip(values[p], ids[p], strict=True)
                    ]
                    for p in range(length)
                ]
            )
        return Generation(
            text=self.tokenizer.decode(row[:length], skip_special_tokens=True),
            token_ids=row[:length],
            token_logprobs=chosen[:length],
            top_logprobs=top_logprobs,
            finish_reason="length" if stop is None else "stop",
            prompt_tokens=prompt_tokens,
            output_tokens=length if stop is None else length + 1,
            token_entropies=entropy[:length] if entropy is not None else None,
        )


def truncate(generation: Generation, *, max_new_tokens: int, top_k: int) -> Generation:
    """``generation`` as if generated with a smaller limit and k (prefixes agree)."""
    if generation.output_tokens <= max_new_tokens:
        cut = generation
    else:
        cut = replace(
            generation,
            token_ids=generation.token_ids[:max_new_tokens],
            token_logprobs=generation.token_logprobs[:max_new_tokens],
            top_logprobs=generation.top_logprobs[:max_new_tokens]
            if generation.top_logprobs is not None
            else None,
            token_entropies=generation.token_entropies[:max_new_tokens]
            if generation.token_entropies is not None
            else None,
            finish_reason="length",
            output_tokens=max_new_tokens,
        )
    top_logprobs = (
        [position[:top_k] for position in cut.top_logprobs]
        if cut.top_logprobs is not None and top_k > 0
        else None
    )
    return replace(cut, top_logprobs=top_logprobs)


@dataclass(frozen=True)
class GenerationRequest:
    conversation: list[dict[str, Any]]
    max_new_tokens: int
    temperature: float
    top_k: int
    entropies: bool = False  # per-position entropies (LocalGenerator.generate)


class Batcher:
    """Groups requests that arrive together into one batched ``generate``.

    The first request waits at most ``window_seconds`` for company; one thread runs
    the model, so generations never compete for it.
    """

    def __init__(self, *, generator: LocalGenerator, max_batch: int, window_seconds: float) -> None:
        self._generator, self._max_batch, self._window = generator, max_batch, window_seconds
        self._queue: asyncio.Queue[tuple[GenerationRequest, asyncio.Future[Generation]]]
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, request: GenerationRequest) -> Generation:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._window
            while len(batch) < self._max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            # Sampling settings are per generate call: one call per temperature.
            for temperature in {request.temperature for request, _ in batch}:
                group = [item for item in batch if item[0].temperature == temperature]
                await self._generate(group, temperature)

    async def _generate(
        self, group: list[tuple[GenerationRequest, asyncio.Future[Generation]]], temperature: float
    ) -> None:
        requests = [request for request, _ in group]
        call = lambda: self._generator.generate(  # noqa: E731
            conversations=[r.conversation for r in requests],
            max_new_tokens=max(r.max_new_tokens for r in requests),
            temperature=temperature,
            top_k=max(r.top_k for r in requests),
            entropies=any(r.entropies for r in requests),
        )
        try:
            generations = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except Exception as error:  # a failed batch fails its requests, not the server
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (request, future), generation in zip(group, generations, strict=True):
            if not future.done():  # the client may have gone away
                future.set_result(
                    truncate(generation, max_new_tokens=request.max_new_tokens, top_k=request.top_k)
                )
