"""The DistillationProject spec: every field a user can set, described for them.

These models are the one source of truth: ``crds/`` is generated from them, and their
descriptions are what ``kubectl explain dp.spec.<field>`` prints.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from distill_operator.api.rules import ApiModel, Rule, UniqueNames

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ARTIFACT_URI_PATTERN = r"^(file|s3|gs|gcs|memory)://[^\s]+$"
PYTHON_REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
ShortText = Annotated[str, Field(max_length=256)]


class Metric(StrEnum):
    EXACT_MATCH = "exact_match"
    ACCURACY = "accuracy"
    TOKEN_F1 = "token_f1"
    ROUGE_L = "rouge_l"
    JSON_VALIDITY = "json_validity"
    PYTHON = "python"


class SecretKeyRef(ApiModel):
    """A key of a Kubernetes Secret in the project's namespace."""

    name: Name = Field(description="Name of the Secret, in the project's namespace.")
    key: Annotated[str, Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the Secret whose value is used."
    )


class Bar(ApiModel):
    """The number that means "ship it", set before any model exists."""

    metric: Metric = Field(
        description="Quality metric the student is judged by: exact_match, accuracy (on a "
        "label field), token_f1, rouge_l, json_validity, python (your own function, see "
        "metricFunction)."
    )
    metric_function: str | None = Field(
        default=None,
        pattern=PYTHON_REF_PATTERN,
        max_length=256,
        description="For metric: python, the scoring function as module:function. It gets "
        "(prediction, reference) and returns a score in [0, 1].",
    )
    threshold: float = Field(
        ge=0.0, le=1.0, description="Minimum metric value (0 to 1) a student must reach."
    )
    cost_per_1k_requests: float = Field(
        gt=0.0,
        alias="costPer1kRequests",
        description="Cost target: the most a student may cost per 1,000 requests, in the "
        "currency of training.pricePerAcceleratorHour.",
    )
    latency_p95_ms: float = Field(
        gt=0.0, description="Latency target: 95th-percentile milliseconds per request."
    )
    batch_size: int = Field(
        default=1, ge=1, le=4096, description="Requests per batch when latency is measured."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.metric != 'python' || has(self.metricFunction)",
            message="metric python needs metricFunction (module:function)",
            field_path=".metricFunction",
            holds=lambda bar: bar.metric != Metric.PYTHON or bar.metric_function is not None,
        ),
    )


class TeacherBackend(StrEnum):
    HF = "hf"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class TokenPricing(ApiModel):
    """What the teacher charges per token, for the cost ledger (status.cost)."""

    input_per_million_tokens: float | None = Field(
        default=None,
        ge=0.0,
        description="Price of one million prompt (input) tokens, in the currency of "
        "students.training.pricePerAcceleratorHour.",
    )
    output_per_million_tokens: float | None = Field(
        default=None,
        ge=0.0,
        description="Price of one million generated (output) tokens, in the same currency.",
    )


class Teacher(ApiModel):
    """The model whose behaviour the student learns."""

    backend: TeacherBackend = Field(
        description="hf: a local Hugging Face causal LM (directory or hf:// name); openai: "
        "any OpenAI-compatible endpoint (OpenAI, vLLM, a gateway); anthropic: the Messages "
        "API (no logprobs, so training is sequence-level)."
    )
    model: ShortText = Field(description="Model name, directory or hf:// URI.", min_length=1)
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=512,
        description="Base URL of the OpenAI-compatible API (backend openai).",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding the API key (backends openai and anthropic). Keys are "
        "only ever read from a Secret, never written into the spec.",
    )
    api_key: str | None = Field(
        default=None,
        max_length=4096,
        description="Not allowed: an inline key would sit in Git and in etcd in plain text. "
        "Put it in a Secret and set apiKeySecretRef.",
    )
    parameters: int | None = Field(
        default=None,
        ge=1,
        description="Teacher parameter count, used to check that every student is smaller.",
    )
    top_logprobs: int = Field(
        default=20,
        ge=0,
        le=100,
        description="Top-k token logprobs to capture per position for soft-label "
        "distillation (0 turns soft labels off).",
    )
    terms_acknowledged: bool = Field(
        default=False,
        description="Set to true once you have confirmed the teacher's terms of service "
        "permit training on its outputs. Teach does not start without it.",
    )
    pricing: TokenPricing | None = Field(
        default=None,
        description="What an API teacher charges per token, to price its tokens in "
        "status.cost. Without it tokens are counted but not priced. A local (hf) teacher "
        "costs accelerator time instead, priced by pricePerAcceleratorHour. Bookkeeping "
        "only: changing it re-runs nothing.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.apiKey)",
            message="an inline apiKey is refused: store it in a Secret and set apiKeySecretRef",
            field_path=".apiKey",
            holds=lambda t: t.api_key is None,
        ),
        Rule(
            cel="self.backend != 'openai' || has(self.endpoint)",
            message="backend openai needs endpoint (the API base URL)",
            field_path=".endpoint",
            holds=lambda t: t.backend != TeacherBackend.OPENAI or t.endpoint is not None,
        ),
        Rule(
            cel="self.backend == 'hf' || has(self.apiKeySecretRef)",
            message="API teachers need apiKeySecretRef (a Secret name and key)",
            field_path=".apiKeySecretRef",
            holds=lambda t: t.backend == TeacherBackend.HF or t.api_key_secret_ref is not None,
        ),
    )


class StudentCandidate(ApiModel):
    """One student size to train on the shared teacher data."""

    name: Name = Field(description="Candidate name, unique within the project.")
    preset: str | None = Field(
        default=None,
        max_length=63,
        description="A size preset of distill_jobs (e.g. tiny, small, base).",
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="A Hugging Face model config (as in config.json) to build the student "
        "from scratch.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    pretrained: ShortText | None = Field(
        default=None, description="A local directory or hf:// name of a pretrained student."
    )
    parameters: int | None = Field(
        default=None, ge=1, description="Parameter count; must be below the teacher's."
    )
    tokenizer: ShortText | None = Field(
        default=None,
        description="A local directory with the tokenizer for a preset or config student. "
        "By default preset students use the tiny tokenizer of distill_jobs.tiny and "
        "pretrained ones their own. Soft labels (teacher logprobs) need the teacher's "
        "tokenizer: point this at it to train on them.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="[has(self.preset), has(self.config), has(self.pretrained)]"
            ".filter(x, x).size() == 1",
            message="set exactly one of preset, config or pretrained",
            field_path=".preset",
            holds=lambda c: sum(x is not None for x in (c.preset, c.config, c.pretrained)) == 1,
        ),
    )


class Divergence(StrEnum):
    FORWARD_KL = "forward_kl"
    REVERSE_KL = "reverse_kl"
    JSD = "jsd"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class LrSchedule(StrEnum):
    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


class DeepSpeedSettings(ApiModel):
    """DeepSpeed engine settings; the config file is built from these."""

    zero_stage: int = Field(default=2, ge=0, le=3, description="ZeRO stage: 0, 1, 2 or 3.")
    offload_optimizer: bool = Field(default=False, description="Offload optimizer to CPU.")
    offload_params: bool = Field(default=False, description="Offload parameters (ZeRO-3).")
    precision: Precision = Field(
        default=Precision.BF16, description="bf16 or fp16 on GPUs; fp32 on CPU."
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    gradient_clipping: float = Field(default=1.0, ge=0.0)


class Training(ApiModel):
    """How every student candidate is trained (the Iterate stage)."""

    alpha: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the hard-label loss: alpha*CE + (1-alpha)*T^2*D(teacher||student).",
    )
    temperature: float = Field(default=2.0, gt=0.0, le=100.0, description="Softmax temperature T.")
    divergence: Divergence = Field(
        default=Divergence.FORWARD_KL,
        description="D: forward_kl, reverse_kl or jsd (generalised, see jsdBeta).",
    )
    jsd_beta: float = Field(default=0.5, gt=0.0, lt=1.0, description="Beta of the JSD.")
    learning_rate: float = Field(default=3e-4, gt=0.0, le=1.0)
    warmup_steps: int = Field(default=10, ge=0)
    lr_schedule: LrSchedule = Field(
        default=LrSchedule.COSINE,
        description="The learning rate after warmupSteps of linear warm-up: constant keeps "
        "learningRate, linear decays it linearly to 0 by the last step, cosine decays it to 0 "
        "along a half cosine.",
    )
    weight_decay: float = Field(
        default=0.0, ge=0.0, le=1.0, description="AdamW weight decay (0 turns it off)."
    )
    epochs: int = Field(default=1, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps.")
    checkpoint_every_steps: int = Field(
        default=50,
        ge=1,
        description="Steps between checkpoints of the student written during training.",
    )
    validation_fraction: float = Field(
        default=0.1,
        gt=0.0,
        le=0.5,
        description="Share of Teach's training prompts held back to score candidates; never "
        "trained on. (Source's held-out set stays untouched for Look.)",
    )
    max_sequence_length: int = Field(
        default=512,
        ge=16,
        le=131072,
        description="Longest prompt plus answer in tokens; longer examples are truncated.",
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of initialisation, data order and the validation split."
    )
    micro_batch_size: int = Field(default=8, ge=1, le=4096, description="Per worker.")
    workers: int = Field(default=2, ge=1, le=1024, description="Ray Train workers.")
    gpus_per_worker: float = Field(default=0, ge=0, le=16, description="0 trains on CPU.")
    cpus_per_worker: float = Field(default=1, gt=0, le=256)
    price_per_accelerator_hour: float = Field(
        default=1.0, gt=0.0, description="Price of one accelerator-hour, for cost per 1k requests."
    )
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)


class Students(ApiModel):
    """Student candidates: the smallest plausible one and at least one larger."""

    candidates: Annotated[list[StudentCandidate], UniqueNames] = Field(
        min_length=2,
        max_length=8,
        description="Candidates, trained on the same teacher data; the smallest that clears "
        "the bar is kept.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    training: Training = Field(default_factory=Training)


class AlternativeKind(StrEnum):
    OFF_THE_SHELF = "off_the_shelf"
    QUANTIZED_TEACHER = "quantized_teacher"
    PROMPT_VARIANT = "prompt_variant"


class Alternative(ApiModel):
    """A cheaper way to clear the bar, tried before any distillation."""

    name: Name
    kind: AlternativeKind = Field(
        description="off_the_shelf (a smaller model as is), quantized_teacher, or "
        "prompt_variant (a different prompt for the teacher or a small model)."
    )
    model: ShortText | None = Field(
        default=None,
        description="A local directory or hf:// name: the model of off_the_shelf, or the "
        "small model a prompt_variant prompts (by default the teacher).",
    )
    quantization: str | None = Field(
        default=None,
        pattern=r"^(int8|int4)$",
        description="int8 or int4 (quantized_teacher). On CPU int8 is dynamic int8 "
        "(torch); int4 needs a GPU with bitsandbytes.",
    )
    prompt: Annotated[str, Field(max_length=8192)] | None = Field(
        default=None, description="System prompt for prompt_variant."
    )
    cost_per_1k_requests: float | None = Field(
        default=None,
        gt=0.0,
        alias="costPer1kRequests",
        description="What 1,000 requests cost when the model is an API (a prompt_variant "
        "of an API teacher); a local model's cost is measured.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.kind != 'off_the_shelf' || has(self.model)",
            message="kind off_the_shelf needs model (a directory or hf:// name)",
            field_path=".model",
            holds=lambda a: a.kind != AlternativeKind.OFF_THE_SHELF or a.model is not None,
        ),
        Rule(
            cel="self.kind != 'quantized_teacher' || has(self.quantization)",
            message="kind quantized_teacher needs quantization (int8 or int4)",
            field_path=".quantization",
            holds=lambda a: (
                a.kind != AlternativeKind.QUANTIZED_TEACHER or a.quantization is not None
            ),
        ),
        Rule(
            cel="self.kind != 'prompt_variant' || has(self.prompt)",
            message="kind prompt_variant needs prompt (the system prompt to try)",
            field_path=".prompt",
            holds=lambda a: a.kind != AlternativeKind.PROMPT_VARIANT or a.prompt is not None,
        ),
    )


class Investigate(ApiModel):
    """Cheaper alternatives; if one clears the bar the project stops, successfully."""

    alternatives: Annotated[list[Alternative], UniqueNames] = Field(
        min_length=1,
        max_length=16,
        description="At least one alternative: the evidence that distillation is worth it.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class CriticalSlice(ApiModel):
    """A slice that matters more than its share of traffic."""

    name: Name
    min_count: int = Field(default=50, ge=1, description="Fewest training examples allowed.")
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The slice's own bar in Look."
    )


class SliceRule(ApiModel):
    """Tags prompts whose text matches a regular expression with a slice name."""

    slice: Name
    pattern: Annotated[str, Field(min_length=1, max_length=1024)]


class Source(ApiModel):
    """Where training prompts come from, and how they are split."""

    traffic: list[Annotated[str, Field(pattern=ARTIFACT_URI_PATTERN, max_length=1024)]] = Field(
        min_length=1,
        max_length=64,
        description="fsspec URIs (file://, s3://, gs://; globs allowed) of production "
        "traffic in chat JSONL or Parquet.",
    )
    slice_field: str | None = Field(
        default=None, max_length=128, description="Record field that names each prompt's slice."
    )
    slice_rules: list[SliceRule] = Field(default_factory=list, max_length=64)
    critical_slices: Annotated[list[CriticalSlice], UniqueNames] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    allow_oversampling: bool = Field(
        default=False, description="Oversample a critical slice below minCount instead of failing."
    )
    held_out_fraction: float = Field(
        default=0.1, gt=0.0, le=0.5, description="Share of each slice set aside, never trained on."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the split and of any sampling.")
    near_duplicate_threshold: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Prompts whose word-shingle Jaccard similarity reaches this are "
        "near-duplicates; one of them is kept (1.0 keeps all but exact duplicates).",
    )
    prompt_field: str = Field(
        default="prompt",
        max_length=128,
        description="For records without chat messages: the field holding the prompt.",
    )
    reference_field: str = Field(
        default="reference",
        max_length=128,
        description="Field with a known-good answer, when traffic has one (for verifiers "
        "and the held-out set).",
    )


class VerifierKind(StrEnum):
    EXACT_MATCH = "exact_match"
    REGEX = "regex"
    JSON_SCHEMA = "json_schema"
    PYTHON = "python"


class Verifier(ApiModel):
    """A check of teacher outputs; an output that fails any verifier is dropped."""

    kind: VerifierKind = Field(
        description="exact_match (against the prompt's reference), regex (the output must "
        "match pattern), json_schema (the output must be JSON valid against schema), or "
        "python (your function module:function returns True to keep)."
    )
    pattern: str | None = Field(default=None, max_length=4096, description="For kind regex.")
    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="For kind json_schema: the JSON Schema outputs must satisfy.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    function: str | None = Field(
        default=None,
        pattern=PYTHON_REF_PATTERN,
        max_length=256,
        description="For kind python: module:function taking (prompt_record, output) and "
        "returning True to keep.",
    )
    slices: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        description="Slices it applies to; empty means every prompt with a reference "
        "(exact_match) or every prompt (the others).",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.kind != 'regex' || has(self.pattern)",
            message="kind regex needs pattern",
            field_path=".pattern",
            holds=lambda v: v.kind != VerifierKind.REGEX or v.pattern is not None,
        ),
        Rule(
            cel="self.kind != 'json_schema' || has(self.schema)",
            message="kind json_schema needs schema",
            field_path=".schema",
            holds=lambda v: v.kind != VerifierKind.JSON_SCHEMA or v.json_schema is not None,
        ),
        Rule(
            cel="self.kind != 'python' || has(self.function)",
            message="kind python needs function (module:function)",
            field_path=".function",
            holds=lambda v: v.kind != VerifierKind.PYTHON or v.function is not None,
        ),
    )


class Teach(ApiModel):
    """How teacher outputs are collected and filtered before anything trains on them."""

    verifiers: list[Verifier] = Field(
        default_factory=list,
        max_length=32,
        description="Checks for checkable outputs; outputs that fail one are dropped. "
        "Outputs no verifier applies to are open-ended: a sample goes to review.",
    )
    review_sample_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Share of open-ended outputs queued for review."
    )
    max_output_tokens: int = Field(
        default=512, ge=1, le=131072, description="Generation limit per prompt."
    )
    min_output_chars: int = Field(
        default=1, ge=0, description="Shorter outputs are dropped (empty answers)."
    )
    max_output_chars: int = Field(
        default=32768, ge=1, description="Longer outputs are dropped (runaway generations)."
    )
    temperature: float = Field(
        default=0.0, ge=0.0, le=2.0, description="Teacher sampling temperature (0 is greedy)."
    )
    batch_size: int = Field(
        default=16, ge=1, le=4096, description="Prompts per batch for a local (hf) teacher."
    )
    concurrency: int = Field(
        default=8, ge=1, le=1024, description="Requests in flight to an API teacher."
    )
    max_request_retries: int = Field(
        default=5, ge=0, le=50, description="Retries of a request answered 429 or 5xx."
    )
    request_timeout_seconds: float = Field(default=120.0, gt=0.0, le=3600.0)


class Look(ApiModel):
    """Slice evaluation of the chosen student against the teacher."""

    max_disagreements: int = Field(
        default=200, ge=0, le=100000, description="Disagreements kept per slice for inspection."
    )


class RolloutMode(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    FULL = "full"


class RolloutStep(ApiModel):
    """One step of the staged rollout: it holds for holdSeconds and advances only while
    agreement and fallback rate stay within launch's bounds."""

    mode: RolloutMode = Field(
        description="shadow: the teacher answers and the student is compared on every "
        "request; canary: percent of requests go to the student; full: all of them."
    )
    percent: int = Field(default=0, ge=0, le=100, description="Student traffic share (canary).")
    hold_seconds: int = Field(
        default=300, ge=0, le=30 * 86400, description="How long the step holds at least."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.mode != 'canary' || (self.percent > 0 && self.percent < 100)",
            message="a canary step needs percent between 1 and 99",
            field_path=".percent",
            holds=lambda step: step.mode != RolloutMode.CANARY or 0 < step.percent < 100,
        ),
    )


class ConfidenceRule(StrEnum):
    MEAN_LOGPROB = "mean_logprob"
    ENTROPY = "entropy"


class RouterPlatform(StrEnum):
    KUBERNETES = "kubernetes"
    RAY = "ray"


class RouterSettings(ApiModel):
    """Where the router runs and listens."""

    platform: RouterPlatform = Field(
        default=RouterPlatform.KUBERNETES,
        description="kubernetes: a Deployment and a Service (<project>-router) owned by the "
        "project, in its namespace; ray: a long-running job on the project's Ray cluster "
        "(spec.ray), e.g. on a stack with no kubelet such as `distill dev up`.",
    )
    host: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:-]+$",
        description="Address the router binds: 127.0.0.1 serves the node it runs on only, "
        "0.0.0.0 every interface. Default: 0.0.0.0 on kubernetes (the pod's address is "
        "advertised), 127.0.0.1 on ray.",
    )
    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port; 0 picks a free one (on ray only: a Service needs a fixed one). "
        "Default: 8000 on kubernetes, 0 on ray. status.serving.endpoint says where it is.",
    )
    image: ShortText | None = Field(
        default=None,
        description="kubernetes: the router's image (distill-operator[jobs]); default "
        "spec.ray.image, else the operator's jobs image.",
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description="kubernetes: the router container's resources (requests, limits).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="A Secret key holding a token: clients must then send `Authorization: "
        "Bearer <token>` to /v1/*, and get 401 without it. /healthz and /metrics stay open "
        "(probes, the operator's scrape). The token reaches the router by reference only; a "
        "router that cannot read it does not start.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.platform != 'kubernetes' || !has(self.port) || self.port != 0",
            message="platform kubernetes needs a fixed port (the Service targets it)",
            field_path=".port",
            holds=lambda r: r.platform != RouterPlatform.KUBERNETES or r.port != 0,
        ),
    )

    def bind(self) -> tuple[str, int]:
        """The host and port the router binds, defaults filled per platform."""
        on_kubernetes = self.platform == RouterPlatform.KUBERNETES
        host = self.host or ("0.0.0.0" if on_kubernetes else "127.0.0.1")
        port = self.port if self.port is not None else (8000 if on_kubernetes else 0)
        return host, port


class Launch(ApiModel):
    """Serving the student behind a router (OpenAI chat completions) and rolling it out."""

    confidence_rule: ConfidenceRule = Field(
        default=ConfidenceRule.MEAN_LOGPROB,
        description="How the student's confidence in an answer is measured from its own token "
        "probabilities: mean_logprob (confident when >= confidenceThreshold) or entropy "
        "(mean next-token entropy, confident when <= confidenceThreshold).",
    )
    confidence_threshold: float = Field(
        default=-1.0,
        ge=-1000.0,
        le=1000.0,
        description="The confidence bar: a request the student is not confident about is "
        "answered by the teacher (a fallback).",
    )
    steps: list[RolloutStep] = Field(
        default_factory=list,
        max_length=16,
        description="The staged rollout, e.g. shadow, canary 5%, canary 25%, full. Empty: "
        "straight to full.",
    )
    min_agreement: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="Least share of compared requests on which student and teacher agree "
        "(the bar's metric >= 0.5); below it a step rolls back, and a live student counts "
        "as drifted.",
    )
    max_fallback_rate: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Most share of the student's requests that may fall back to the teacher; "
        "above it a step rolls back.",
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Requests the student must be asked in a step before the step is judged.",
    )
    sample_rate: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of the student's answers also asked of the teacher and compared, "
        "in canary and full (shadow compares every request).",
    )
    router: RouterSettings = Field(default_factory=RouterSettings)


class Lifecycle(ApiModel):
    """The live student as living infrastructure: drift checks and re-distillation."""

    auto_redistill: bool = Field(
        default=False,
        description="Loop back to Source when drift is found (else: condition Drifted only).",
    )
    schedule: str | None = Field(
        default=None,
        max_length=128,
        description="Cron schedule (5 fields, UTC) for re-distilling on fresh traffic.",
    )
    drift_check_seconds: int = Field(
        default=3600, ge=5, le=30 * 86400, description="Seconds between drift checks."
    )
    max_slice_shift: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Most total-variation distance between the live and the training slice mix.",
    )
    max_length_shift: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Most Kolmogorov-Smirnov distance between live and training prompt lengths.",
    )
    sample_rows: int = Field(
        default=5000, ge=10, le=10_000_000, description="Live rows a drift check reads at most."
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, schedule: str | None) -> str | None:
        from croniter import croniter  # the operator's dependency; imported where checked

        if schedule is not None and not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a cron schedule (5 fields: m h dom mon dow)")
        return schedule


class RayMode(StrEnum):
    SUBMIT = "submit"
    RAYJOB = "rayjob"


class SecretDelivery(StrEnum):
    RUNTIME_ENV = "runtimeEnv"
    CLUSTER = "cluster"


class Ray(ApiModel):
    """Where stage jobs run."""

    mode: RayMode = Field(
        default=RayMode.SUBMIT,
        description="submit: send jobs to an existing Ray cluster's dashboard (address); "
        "rayjob: create a KubeRay RayJob per stage attempt.",
    )
    address: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=512,
        description="Dashboard URL for mode submit; defaults to the operator's own setting.",
    )
    secret_delivery: SecretDelivery = Field(
        default=SecretDelivery.RUNTIME_ENV,
        description="How mode submit's jobs get the Secrets the spec names (the teacher's "
        "API key; the router's token on platform ray). runtimeEnv: the operator reads each "
        "Secret and sends its value in the Ray job's runtime_env, where whoever may read the "
        "Ray cluster's job API can see it. cluster: the operator reads and sends nothing; "
        "the Ray cluster's pods carry the values themselves (env DISTILL_TEACHER_API_KEY and "
        "DISTILL_ROUTER_TOKEN from a secretKeyRef), so those Secrets need not exist in the "
        "project's namespace. Mode rayjob always passes them by secretKeyRef.",
    )
    image: ShortText | None = Field(default=None, description="Image for RayJob clusters.")
    ray_cluster_spec: dict[str, Any] | None = Field(
        default=None,
        description="A KubeRay rayClusterSpec template for mode rayjob (head and worker "
        "groups, GPU workers for training).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.mode != 'rayjob' || has(self.image) || has(self.rayClusterSpec)",
            message="mode rayjob needs image or rayClusterSpec",
            field_path=".image",
            holds=lambda r: (
                r.mode != RayMode.RAYJOB or r.image is not None or r.ray_cluster_spec is not None
            ),
        ),
        Rule(
            cel="self.mode == 'submit' || self.secretDelivery != 'cluster'",
            message="secretDelivery cluster is for mode submit (a RayJob takes Secrets by "
            "secretKeyRef)",
            field_path=".secretDelivery",
            holds=lambda r: r.mode == RayMode.SUBMIT or r.secret_delivery != SecretDelivery.CLUSTER,
        ),
    )


class Artifacts(ApiModel):
    """The artifact store: inputs, results, datasets and checkpoints of every stage."""

    uri: str = Field(
        pattern=ARTIFACT_URI_PATTERN,
        max_length=1024,
        description="Root URI: file://, s3://, gs:// (or memory:// for tests).",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret with the store's credentials (JSON)."
    )


class StagePolicy(ApiModel):
    """Deadlines and retries of stage jobs."""

    deadline_seconds: int = Field(
        default=3600, ge=1, description="Longest a stage attempt may run before it is stopped."
    )
    max_retries: int = Field(default=2, ge=0, le=20, description="Retries after a failed job.")
    backoff_seconds: int = Field(
        default=10, ge=0, le=86400, description="First retry delay; doubles each retry."
    )


class ProjectSpec(ApiModel):
    """A distillation project: the task, the bar, and how each stage runs."""

    task: str = Field(
        min_length=1,
        max_length=500,
        description="The capability the student must reproduce, in one sentence.",
    )
    bar: Bar = Field(description="Metric, threshold, cost and latency targets.")
    teacher: Teacher
    students: Students
    investigate: Investigate
    source: Source
    teach: Teach = Field(default_factory=Teach)
    look: Look = Field(default_factory=Look)
    launch: Launch = Field(default_factory=Launch)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    ray: Ray = Field(default_factory=Ray)
    artifacts: Artifacts
    policy: StagePolicy = Field(default_factory=StagePolicy)
    suspend: bool = Field(
        default=False,
        description="Pause: no stage job, rollout step or drift check starts; a running job "
        "finishes and the router keeps serving.",
    )

    def jobs_bring_their_secrets(self, mode: str) -> bool:
        """Whether jobs of this launcher mode get their Secrets from the Ray cluster's own
        pods (ray.secretDelivery cluster), so the operator must neither read nor send them."""
        cluster = self.ray.secret_delivery == SecretDelivery.CLUSTER
        return cluster and mode == RayMode.SUBMIT.value

    def secrets_in_namespace(self) -> dict[str, SecretKeyRef]:
        """The Secret keys that must exist in the project's namespace, by the field that
        names each: all it names, but those only jobs that bring their own Secrets take."""
        router_on_ray = self.launch.router.platform == RouterPlatform.RAY
        from_cluster = self.jobs_bring_their_secrets(self.ray.mode.value) and router_on_ray
        refs = {"spec.artifacts.credentialsSecretRef": self.artifacts.credentials_secret_ref}
        if not from_cluster:
            refs["spec.teacher.apiKeySecretRef"] = self.teacher.api_key_secret_ref
            refs["spec.launch.router.tokenSecretRef"] = self.launch.router.token_secret_ref
        return {field: ref for field, ref in refs.items() if ref is not None}

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.teacher.parameters) || self.students.candidates.all(c, "
            "!has(c.parameters) || c.parameters < self.teacher.parameters)",
            message="every student candidate must have fewer parameters than the teacher",
            field_path=".students.candidates",
            holds=lambda s: (
                s.teacher.parameters is None
                or all(
                    c.parameters is None or c.parameters < s.teacher.parameters
                    for c in s.students.candidates
                )
            ),
        ),
        Rule(
            cel="self.teacher.backend == 'hf' || "
            "self.investigate.alternatives.all(a, a.kind != 'quantized_teacher')",
            message="a quantized_teacher alternative needs a local teacher (teacher.backend: "
            "hf): an API teacher's weights cannot be quantized here",
            field_path=".investigate.alternatives",
            holds=lambda s: (
                s.teacher.backend == TeacherBackend.HF
                or all(
                    a.kind != AlternativeKind.QUANTIZED_TEACHER for a in s.investigate.alternatives
                )
            ),
        ),
    )
