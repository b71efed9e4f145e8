"""Typed configuration: the only place defaults live.

One dataclass per stage, nested in :class:`JobConfig`. Precedence: CLI ``--section.key=value``
beats the recipe file, which beats the defaults here. Unknown keys and invalid values raise
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPE_DIR = Path(__file__).parent / "recipes"

DATA_FORMATS = (
    "lcrec",
    "amazon2023",
    "amazon2023_benchmark",
    "movielens",
    "table",
    "synthetic",
    "embedded",
)
TOKENIZER_METHODS = ("mhvq", "rqvae", "rqkmeans", "opq")
TOKENIZER_FEATURES = ("text", "collaborative", "text+collaborative")
"""What the tokenizer quantises: the embed stage's text vectors (LLaDA-Rec), co-occurrence
vectors of the training split (`semantic_ids/collaborative.py`), or both fused."""
ATTENTION_KINDS = ("bidirectional", "causal", "inter_item_causal", "intra_item_causal")
OBJECTIVES = ("llada", "maskgr")
LAUNCHERS = ("local", "deepspeed", "ray")
PRECISIONS = ("auto", "fp32", "bf16")
DECODE_ORDERS = ("adaptive", "l2r", "r2l")
BASELINE_MODELS = ("sasrec", "tiger")
RANKINGS = ("generative", "dense", "hybrid")
"""Ranked lists from: the constrained beam search, the dense head (every item scored), or the
beam's and the dense head's candidates re-scored by a weighted sum of both (`decode/hybrid.py`)."""
WHOLE_SEQUENCE_ATTENTION = ("inter_item_causal",)
"""Attention under which one pass over a sequence gives every prefix's next-item loss exactly."""
HISTORY_CACHE_ATTENTION = ("inter_item_causal", "causal")
"""Attention under which the history never attends the target, so decoding can cache it."""

Switch = typing.NewType("Switch", str)
"""'auto', 'true' or 'false' (TOML booleans and the CLI's true/false/on/off are accepted)."""
SWITCH_VALUES = ("auto", "true", "false")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names the key."""


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")


def _check_positive(key: str, value: float, allow_zero: bool = False) -> None:
    if not (value > 0 or (allow_zero and value == 0)):  # NaN fails both
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} must be {bound}")


@dataclass
class DataConfig:
    """Raw interaction logs -> cleaned, split, sharded Parquet (SPEC §2)."""

    format: str = "embedded"
    """Input format: one of DATA_FORMATS; 'embedded' is MovieLens 100K from the recbole wheel."""
    path: str = ""
    """File or folder holding the raw data (unused for 'embedded' and 'synthetic')."""
    name: str = ""
    """Dataset or category name used to find files in `path` (e.g. 'Scientific'); auto when empty."""
    kcore: int = 5
    """Iterative k-core threshold on users and items; 0 disables."""
    max_history: int = 20
    """History is truncated to this many most recent items."""
    errors: str = "strict"
    """'strict': malformed input is an error naming file and line; 'lenient': a counted skip."""
    text_fields: list[str] = field(
        default_factory=lambda: ["title", "features", "description", "categories", "brand"]
    )
    """Item metadata fields joined (in order) into the item text."""
    text_max_words: int = 128
    """Item text is truncated to this many whitespace-separated words."""
    num_shards: int = 8
    """Number of Parquet shards for interactions and training samples (by stable user hash)."""
    download: bool = False
    """Download the raw files into `path` first (amazon2023, movielens) when they are missing."""
    download_base_url: str = ""
    """Override of the publisher's base URL (mirrors, tests); empty uses the official location."""
    synthetic_users: int = 2000
    """Synthetic generator: number of users."""
    synthetic_items: int = 1000
    """Synthetic generator: number of items."""
    synthetic_interactions: int = 40000
    """Synthetic generator: total number of interactions."""
    synthetic_zipf: float = 1.1
    """Synthetic generator: Zipf exponent of item popularity."""
    synthetic_seed: int = 0
    """Synthetic generator: random seed."""
    train_item_drop: float = 0.0
    """Data-efficiency study (MaskGR): drop this fraction of each user's training items (at
    least 3 kept) before the training samples and windows are made; valid and test untouched."""
    train_drop_seed: int = 0
    """Seed of the dropped items (a user's draw depends on it and its user_id only)."""
    user_column: str = "user_id"
    """'table' format: user id column of the interactions table."""
    item_column: str = "item_id"
    """'table' format: item id column of the interactions and items tables."""
    timestamp_column: str = "timestamp"
    """'table' format: timestamp column (numbers; larger is later) of the interactions table."""

    def __post_init__(self) -> None:
        _check_choice("data.format", self.format, DATA_FORMATS)
        _check_choice("data.errors", self.errors, ("strict", "lenient"))
        _check_positive("data.kcore", self.kcore, allow_zero=True)
        _check_positive("data.max_history", self.max_history)
        _check_positive("data.num_shards", self.num_shards)
        if not 0 <= self.train_item_drop < 1:
            raise ConfigError(f"data.train_item_drop={self.train_item_drop!r} must be in [0, 1)")
        _check_positive("data.text_max_words", self.text_max_words)
        _check_positive("data.synthetic_users", self.synthetic_users)
        _check_positive("data.synthetic_items", self.synthetic_items)
        _check_positive("data.synthetic_interactions", self.synthetic_interactions)
        needs_path = self.format not in ("synthetic", "embedded")
        if needs_path and not self.path and not self.download:
            raise ConfigError(f"data.path is required for data.format={self.format!r}")


@dataclass
class RayConfig:
    """Where Ray work runs."""

    address: str = ""
    """Ray cluster address ('auto', 'ray://host:10001', ...); empty starts a local instance."""
    num_cpus: int = 0
    """CPUs for a locally started Ray instance; 0 lets Ray detect them."""
    actor_num_cpus: float = 0.5
    """CPUs reserved per actor: keep below the node's CPUs so read tasks are not starved."""


@dataclass
class EmbedConfig:
    """Item text -> sentence embeddings (SPEC §3)."""

    model: str = "all-MiniLM-L6-v2"
    """sentence-transformers model: the name of the bundled offline model or a local path."""
    batch_size: int = 128
    """Items per `map_batches` call."""
    concurrency: int = 1
    """Number of embedding actors."""
    device: str = "cpu"
    """Device of the embedding model ('cpu', 'cuda')."""
    normalize: bool = True
    """L2-normalise the embeddings."""
    pca_dim: int = 128
    """PCA dims fitted on training items (reference 128; capped by their count); 0 disables."""
    pca_whiten: bool = True
    """Whiten the PCA output."""
    max_seq_length: int = 128
    """Word pieces per item text seen by the model (MiniLM was trained on 128); 0: model's own."""
    num_threads: int = 0
    """Torch threads per embedding actor; 0 keeps what Ray gives the actor (1 for < 1 CPU)."""

    def __post_init__(self) -> None:
        _check_positive("embed.batch_size", self.batch_size)
        _check_positive("embed.concurrency", self.concurrency)
        _check_positive("embed.pca_dim", self.pca_dim, allow_zero=True)
        _check_positive("embed.max_seq_length", self.max_seq_length, allow_zero=True)
        _check_positive("embed.num_threads", self.num_threads, allow_zero=True)


@dataclass
class TokenizerConfig:
    """Item embeddings -> semantic IDs (SPEC §4)."""

    method: str = "mhvq"
    """One of TOKENIZER_METHODS: multi-head VQ-VAE, RQ-VAE, residual k-means, OPQ."""
    num_heads: int = 4
    """M: number of codebooks (positions of a semantic ID)."""
    codebook_size: int = 256
    """K: codes per codebook."""
    code_dim: int = 32
    """d_c: dimension of each code vector."""
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256])
    """Encoder MLP hidden sizes (decoder mirrored); input and latent sizes are implied."""
    beta: float = 0.25
    """Commitment weight of the VQ loss."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    batch_size: int = 2048
    """Items per optimisation step."""
    max_epochs: int = 500
    """Upper bound on epochs (about 4 CPU minutes for 4k items); the stopping rule may end sooner."""
    patience: int = 50
    """Stop when recon_mse/var + collision_rate has not improved for this many epochs."""
    min_delta: float = 1e-3
    """Smallest relative improvement that resets patience."""
    dead_code_reseed_every: int = 20
    """Every this many epochs, codes unused over the epoch are re-seeded from latents; 0 disables."""
    kmeans_iters: int = 25
    """FAISS k-means iterations for codebook initialisation."""
    sinkhorn_iters: int = 50
    """Sinkhorn iterations for the balanced re-assignment of colliding items."""
    seed: int = 0
    """Random seed of the tokenizer."""
    num_threads: int = 1
    """Torch CPU threads while tokenizing; 0 keeps torch's default (1 is fastest on busy CPUs)."""
    features: str = "text"
    """One of TOKENIZER_FEATURES: 'text' (LLaDA-Rec), 'collaborative' or 'text+collaborative'."""
    collaborative_dim: int = 64
    """Dimension of the collaborative vectors (truncated SVD of the PPMI co-occurrence matrix)."""
    collaborative_window: int = 3
    """Two items of a user's training sequence co-occur when at most this many positions apart."""
    collaborative_share: float = 0.5
    """'text+collaborative': the collaborative block's share of the fused vector's variance."""

    def __post_init__(self) -> None:
        _check_choice("tokenize.method", self.method, TOKENIZER_METHODS)
        _check_choice("tokenize.features", self.features, TOKENIZER_FEATURES)
        _check_positive("tokenize.collaborative_dim", self.collaborative_dim)
        _check_positive("tokenize.collaborative_window", self.collaborative_window)
        if not 0 <= self.collaborative_share <= 1:
            raise ConfigError(
                f"tokenize.collaborative_share={self.collaborative_share!r} must be in [0, 1]"
            )
        _check_positive("tokenize.num_heads", self.num_heads)
        _check_positive("tokenize.codebook_size", self.codebook_size)
        _check_positive("tokenize.code_dim", self.code_dim)
        _check_positive("tokenize.beta", self.beta, allow_zero=True)
        _check_positive("tokenize.lr", self.lr)
        _check_positive("tokenize.batch_size", self.batch_size)
        _check_positive("tokenize.max_epochs", self.max_epochs)
        _check_positive("tokenize.num_threads", self.num_threads, allow_zero=True)


@dataclass
class ModelConfig:
    """The bidirectional mask predictor and its objective (SPEC §5-6)."""

    d_model: int = 256
    """Hidden size."""
    num_layers: int = 4
    """Transformer encoder layers."""
    num_attention_heads: int = 8
    """Attention heads per layer."""
    ffn_dim: int = 1024
    """SwiGLU hidden size (1024 gives the reference ~4.73M parameters at d_model 256, 4 layers)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention output and FFN output."""
    attention: str = "bidirectional"
    """One of ATTENTION_KINDS."""
    objective: str = "llada"
    """'llada' (next-item mask + lambda * history mask) or 'maskgr' (whole-sequence masking)."""
    item_loss_weight: float = 1.0
    """Weight of the next-item mask loss (0 ablates it)."""
    history_loss_weight: float = 3.5
    """lambda: weight of the user-history mask loss (0 ablates it)."""
    dense_loss_weight: float = 0.0
    """Weight of MaskGR's dense-retrieval loss (`model/dense.py`); > 0 adds the dense head and
    the item text embeddings (DIR/embed) as an input on known items."""
    dense_temperature: float = 0.1
    """tau of the dense head's cosine softmax over all items."""
    dense_learned_keys: bool = False
    """Item keys = normalised text embedding plus a learned per-item offset (false: the text
    embedding alone, as in MaskGR)."""
    dense_text_input: bool = True
    """Add the projected text embedding of every fully known item to its token embeddings."""
    catalog_loss_weight: float = 0.0
    """Weight of the generative catalogue loss (`model/catalog.py`): every real item is scored by
    the sum of its M code logits from the fully masked target (the one-step beam score, up to a
    constant) and the softmax over the catalogue is trained by cross-entropy against the
    target; 0 leaves it out (LLaDA-Rec)."""

    def __post_init__(self) -> None:
        _check_choice("model.attention", self.attention, ATTENTION_KINDS)
        _check_choice("model.objective", self.objective, OBJECTIVES)
        _check_positive("model.d_model", self.d_model)
        _check_positive("model.num_layers", self.num_layers)
        _check_positive("model.num_attention_heads", self.num_attention_heads)
        if self.d_model % self.num_attention_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} must be divisible by "
                f"model.num_attention_heads={self.num_attention_heads}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        _check_positive("model.item_loss_weight", self.item_loss_weight, allow_zero=True)
        _check_positive("model.history_loss_weight", self.history_loss_weight, allow_zero=True)
        _check_positive("model.dense_loss_weight", self.dense_loss_weight, allow_zero=True)
        _check_positive("model.dense_temperature", self.dense_temperature)
        _check_positive("model.catalog_loss_weight", self.catalog_loss_weight, allow_zero=True)
        if self.objective == "llada" and self.item_loss_weight == self.history_loss_weight == 0:
            raise ConfigError("model.item_loss_weight and model.history_loss_weight are both 0")


@dataclass
class TrainConfig:
    """DeepSpeed training of the mask predictor (SPEC §6)."""

    launcher: str = "local"
    """'local' (in this process or torchrun), 'deepspeed' (the deepspeed launcher) or 'ray'."""
    num_procs: int = 1
    """Processes per node started by the 'deepspeed' or 'ray' launcher."""
    hostfile: str = ""
    """DeepSpeed hostfile for multi-node runs; empty runs on this node."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 0-3."""
    global_batch_size: int = 1024
    """Samples per optimiser step across all processes (= micro x accumulation x world)."""
    micro_batch_size: int = 64
    """Samples per forward pass on one process (small micro-batches cut padding and memory)."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent in linear warm-up before the cosine decay."""
    grad_clip: float = 1.0
    """Gradient norm clipping; 0 disables."""
    max_epochs: int = 150
    """Upper bound on epochs."""
    max_steps: int = 0
    """Stop after this many optimiser steps; 0 means no bound (benchmarks, tests)."""
    precision: str = "auto"
    """'auto' (fp32 on CPU, bf16 on GPU), 'fp32' or 'bf16' (on CPU: bf16 autocast, fp32 weights)."""
    eval_every_epochs: int = 1
    """Validate every this many epochs."""
    eval_max_users: int = 0
    """Validate on at most this many users (a fixed sample); 0 uses all."""
    patience: int = 5
    """Early stopping: validations without improvement before stopping."""
    monitor: str = "ndcg@10"
    """Validation metric that selects the best checkpoint."""
    report_test: bool = False
    """After every validation also decode a fixed sample of test users (train.eval_max_users,
    the same seed) and report it beside validation (never used for selection); the summary
    gives the rank correlation of the two over epochs (does validation predict test?)."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many steps (for resuming); 0: only at validations."""
    resume: bool = False
    """Continue from the latest checkpoint in the run directory."""
    log_every_steps: int = 10
    """TensorBoard and progress-bar update interval."""
    seed: int = 0
    """Seed for initialisation, masking and data order."""
    whole_sequence: Switch = Switch("auto")
    """Train on whole sequences (windows of up to data.max_history + 1 items): one pass computes
    every item's next-item loss (docs/training.md). 'auto': wherever exact, i.e. with
    model.attention=inter_item_causal; 'false': one sample per prefix; 'true' with another
    attention is an error."""

    def __post_init__(self) -> None:
        _check_choice("train.whole_sequence", self.whole_sequence, SWITCH_VALUES)
        _check_choice("train.launcher", self.launcher, LAUNCHERS)
        _check_choice("train.precision", self.precision, PRECISIONS)
        _check_positive("train.num_procs", self.num_procs)
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"train.zero_stage={self.zero_stage!r} must be 0, 1, 2 or 3")
        _check_positive("train.global_batch_size", self.global_batch_size)
        _check_positive("train.micro_batch_size", self.micro_batch_size)
        _check_positive("train.lr", self.lr)
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        _check_positive("train.max_epochs", self.max_epochs)
        _check_positive("train.max_steps", self.max_steps, allow_zero=True)
        _check_positive("train.eval_every_epochs", self.eval_every_epochs)
        _check_positive("train.patience", self.patience)


@dataclass
class DecodeConfig:
    """Adaptive-order beam search (SPEC §7)."""

    beam_size: int = 50
    """B: beams kept per user at test time."""
    steps: int = 4
    """T: decoding steps; num_heads / steps positions are filled per step."""
    order: str = "adaptive"
    """'adaptive' (most confident positions first), 'l2r' or 'r2l'."""
    top_k: int = 10
    """Items returned per user."""
    valid_beam_size: int = 1
    """Beam size during validation (1 = greedy)."""
    valid_steps: int = 0
    """T of validation during training (which selects the best epoch); 0: decode.steps."""
    valid_order: str = "auto"
    """Order of validation during training: 'auto' (= decode.order) or one of the orders."""
    precision: str = "auto"
    """Model forward pass: 'fp32', 'bf16' (autocast) or 'auto' (bf16 where the device computes it
    natively: GPUs, CPUs with AVX512_BF16/AMX; else fp32). Log-probabilities and scores are fp32."""
    exclude_history: bool = True
    """Never recommend an item of the user's own history (prepare drops repeated (user, item)
    events, so such an item is never the target); the popularity floor and SASRec do the same."""
    ranking: str = "generative"
    """One of RANKINGS; 'dense' and 'hybrid' need model.dense_loss_weight > 0."""
    dense_candidates: int = 50
    """Hybrid ranking: the dense head's top-N items added to the beam's candidates."""
    hybrid_weight: float = -1.0
    """Hybrid ranking: score = (1 - w) * generative log-prob + w * dense log-prob; w < 0 chooses
    w on the validation split (NDCG@K over `hybrid_grid` steps of 0..1) and applies it to test."""
    hybrid_grid: int = 20
    """Hybrid ranking: w is chosen among 0, 1/n, ..., 1."""
    dense_prior_weight: float = 0.0
    """Dense-guided beam (needs the dense head): while beams are pruned (every step but the last),
    a partial ID is kept by its generative score plus this weight times the best dense log-prob
    among the items it can still become; lists and scores stay generative. 0 disables."""
    valid_ranking: str = "auto"
    """Ranking mode that validation during training decodes and selects the best epoch on:
    'auto' (= decode.ranking) or one of RANKINGS. 'dense' needs no beam search (one forward pass
    per user), so selection costs little while the test decode stays hybrid."""
    cache_history: Switch = Switch("auto")
    """Compute a user's history once and let every beam and step attend to its cached keys and
    values. 'auto': wherever exact (model.attention inter_item_causal or causal, where the
    history never attends the target); 'false': every step re-encodes the whole sequence."""

    def __post_init__(self) -> None:
        _check_choice("decode.cache_history", self.cache_history, SWITCH_VALUES)
        _check_choice("decode.order", self.order, DECODE_ORDERS)
        _check_choice("decode.valid_order", self.valid_order, ("auto", *DECODE_ORDERS))
        _check_positive("decode.valid_steps", self.valid_steps, allow_zero=True)
        _check_choice("decode.ranking", self.ranking, RANKINGS)
        _check_choice("decode.valid_ranking", self.valid_ranking, ("auto", *RANKINGS))
        _check_positive("decode.dense_candidates", self.dense_candidates, allow_zero=True)
        _check_positive("decode.hybrid_grid", self.hybrid_grid)
        _check_positive("decode.dense_prior_weight", self.dense_prior_weight, allow_zero=True)
        if self.hybrid_weight > 1:
            raise ConfigError(f"decode.hybrid_weight={self.hybrid_weight!r} must be <= 1")
        _check_choice("decode.precision", self.precision, PRECISIONS)
        _check_positive("decode.beam_size", self.beam_size)
        _check_positive("decode.steps", self.steps)
        _check_positive("decode.top_k", self.top_k)
        _check_positive("decode.valid_beam_size", self.valid_beam_size)


@dataclass
class EvaluateConfig:
    """Sharded evaluation as a Ray batch job (SPEC §8)."""

    num_shards: int = 2
    """Users are split into this many shards, one Ray task each."""
    batch_size: int = 64
    """Users decoded together in one forward pass."""
    max_retries: int = 3
    """Ray retries of a failed shard task."""
    splits: list[str] = field(default_factory=lambda: ["valid", "test"])
    """Splits evaluated."""
    use_ray: bool = True
    """Run shards as Ray tasks; false runs them in this process."""
    max_users: int = 0
    """Evaluate a fixed random sample of this many users per split (seeded); 0 uses all."""
    sample_seed: int = 0
    """Seed of the `max_users` sample."""

    def __post_init__(self) -> None:
        _check_positive("evaluate.num_shards", self.num_shards)
        _check_positive("evaluate.batch_size", self.batch_size)
        _check_positive("evaluate.max_users", self.max_users, allow_zero=True)
        for split in self.splits:
            _check_choice("evaluate.splits", split, ("valid", "test"))


@dataclass
class BaselineConfig:
    """SASRec and TIGER-style baselines on the same splits and metrics (SPEC §9)."""

    model: str = "sasrec"
    """One of BASELINE_MODELS: 'sasrec' (item ids) or 'tiger' (semantic IDs, use tokenize rqvae)."""
    d_model: int = 64
    """Hidden size."""
    num_layers: int = 2
    """Causal Transformer layers."""
    num_attention_heads: int = 2
    """Attention heads per layer."""
    dropout: float = 0.2
    """Dropout on embeddings, attention output and FFN output."""
    lr: float = 1e-3
    """AdamW learning rate."""
    batch_size: int = 256
    """Samples per optimiser step; also sequences per evaluation batch (tiger: users x beams)."""
    max_epochs: int = 50
    """Upper bound on epochs."""
    patience: int = 5
    """Early stopping: epochs without a better valid NDCG@10 before stopping."""
    beam_size: int = 50
    """TIGER: beams kept per user by the constrained beam search."""
    valid_max_users: int = 0
    """Select epochs on at most this many validation users (a fixed sample); 0 uses all. TIGER's
    beam search over every validation user after every epoch costs more than the epoch itself."""
    whole_sequence: bool = False
    """SASRec: train on prepare's training windows, every item after a window's first a
    next-item target of one causal pass (SASRec's own objective, positions counted from the
    first item); `batch_size` then counts windows. False: one sample per prefix. TIGER-style
    always trains per prefix."""
    in_run: list[str] = field(default_factory=list)
    """Baselines (BASELINE_MODELS) that `run` trains after evaluate, on the same splits, and
    reports beside the model in results.md (e.g. ["sasrec"])."""

    def __post_init__(self) -> None:
        _check_choice("baseline.model", self.model, BASELINE_MODELS)
        for name in self.in_run:
            _check_choice("baseline.in_run", name, BASELINE_MODELS)

        if len(set(self.in_run)) != len(self.in_run):
            raise ConfigError(f"baseline.in_run={self.in_run!r} names a baseline twice")
        _check_positive("baseline.d_model", self.d_model)
        _check_positive("baseline.num_layers", self.num_layers)
        _check_positive("baseline.num_attention_heads", self.num_attention_heads)
        _check_positive("baseline.valid_max_users", self.valid_max_users, allow_zero=True)
        if self.d_model % self.num_attention_heads:
            raise ConfigError(
                f"baseline.d_model={self.d_model} must be divisible by "
                f"baseline.num_attention_heads={self.num_attention_heads}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"baseline.dropout={self.dropout!r} must be in [0, 1)")
        _check_positive("baseline.lr", self.lr)
        _check_positive("baseline.batch_size", self.batch_size)
        _check_positive("baseline.max_epochs", self.max_epochs)
        _check_positive("baseline.patience", self.patience)
        _check_positive("baseline.beam_size", self.beam_size)


@dataclass
class JobConfig:
    """Everything a run needs; written resolved to `run_dir/config.json`."""

    run_dir: str = "runs/default"
    """Where every stage writes its artifacts."""
    seed: int = 0
    """Global seed (each stage also has its own)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    data: DataConfig = field(default_factory=DataConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenize: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        attention = self.model.attention
        if self.train.whole_sequence == "true" and attention not in WHOLE_SEQUENCE_ATTENTION:
            raise ConfigError(
                f"train.whole_sequence=true is exact only with model.attention="
                f"{' or '.join(WHOLE_SEQUENCE_ATTENTION)} (got {attention!r}); set it to auto or false"
            )
        if self.decode.cache_history == "true" and attention not in HISTORY_CACHE_ATTENTION:
            raise ConfigError(
                f"decode.cache_history=true is exact only with model.attention="
                f"{' or '.join(HISTORY_CACHE_ATTENTION)} (got {attention!r}: the history attends "
                "the target); set it to auto or false"
            )
        for key, ranking in (
            ("decode.ranking", self.decode.ranking),
            ("decode.valid_ranking", self.validation_ranking),
        ):
            if ranking != "generative" and self.model.dense_loss_weight == 0:
                raise ConfigError(
                    f"{key}={ranking!r} needs the dense head: set model.dense_loss_weight > 0"
                )
        if self.decode.dense_prior_weight > 0 and self.model.dense_loss_weight == 0:
            raise ConfigError(
                "decode.dense_prior_weight > 0 guides the beam by the dense head: set "
                "model.dense_loss_weight > 0"
            )
        for key, steps in (
            ("decode.steps", self.decode.steps),
            ("decode.valid_steps", self.validation_steps),
        ):
            if self.tokenize.num_heads % steps:
                raise ConfigError(
                    f"{key}={steps} must divide tokenize.num_heads={self.tokenize.num_heads}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def whole_sequence_training(self) -> bool:
        """train.whole_sequence resolved against model.attention."""
        return _switch_on(self.train.whole_sequence, self.model.attention, WHOLE_SEQUENCE_ATTENTION)

    @property
    def validation_ranking(self) -> str:
        """decode.valid_ranking resolved: the mode validation during training decodes."""
        if self.decode.valid_ranking == "auto":
            return self.decode.ranking
        return self.decode.valid_ranking

    @property
    def validation_steps(self) -> int:
        """decode.valid_steps resolved: the T validation during training decodes with."""
        return self.decode.valid_steps or self.decode.steps

    @property
    def validation_order(self) -> str:
        """decode.valid_order resolved: the order validation during training decodes in."""
        return self.decode.order if self.decode.valid_order == "auto" else self.decode.valid_order

    @property
    def cached_decoding(self) -> bool:
        """decode.cache_history resolved against model.attention."""
        return _switch_on(self.decode.cache_history, self.model.attention, HISTORY_CACHE_ATTENTION)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections or top-level fields such as `seed` (for skipping
        unchanged stages and naming a result's configuration)."""
        import hashlib

        payload = {}
        for name in sections:
            value = getattr(self, name)
            payload[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _switch_on(value: str, attention: str, exact_under: tuple[str, ...]) -> bool:
    return value == "true" or (value == "auto" and attention in exact_under)


# --- loading, overriding, validating -------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert `value` (from TOML or a CLI string) to `annotation`, or raise naming `key`."""
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List):  # noqa: UP006
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        return [_coerce(key, v, item_type) for v in value]
    if origin is types.UnionType:
        raise ConfigError(f"{key}: union types are not supported in the config")
    if annotation is Switch:
        if isinstance(value, bool):
            return Switch("true" if value else "false")
        if isinstance(value, str) and value.lower() == "auto":
            return Switch("auto")
        try:
            return Switch("true" if _coerce(key, value, bool) else "false")
        except ConfigError:
            raise ConfigError(f"{key} expects auto, true or false, got {value!r}") from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key} expects an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} expects a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} expects a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} expects a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key} expects a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        where = f"section {prefix.rstrip('.')}" if prefix else "the config"
        raise ConfigError(f"{where} must be a mapping of keys, got {type(values).__name__}")
    types_by_name = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in types_by_name:
            known = ", ".join(f"{prefix}{n}" for n in types_by_name)
            raise ConfigError(f"unknown config key {key!r}; known keys: {known}")
        annotation = types_by_name[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"{key} is a section; set its keys as {key}.<key>=<value>")
            kwargs[name] = _build(annotation, value, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, annotation)
    for name, annotation in types_by_name.items():
        if dataclasses.is_dataclass(annotation) and name not in kwargs:
            kwargs[name] = _build(annotation, {}, f"{prefix}{name}.")
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``["--train.lr=1e-3", "--run_dir", "x"]`` into a nested dict of raw strings."""
    nested: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected --section.key=value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            dotted, raw = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            dotted, raw = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"{arg!r} has no value; write {arg}=<value>")
        node = nested
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"malformed config key {dotted!r}")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted!r} conflicts with an earlier override")
        node[parts[-1]] = raw
        i += 1
    return nested


def resolve_named_file(
    name_or_path: str, directory: Path, option: str, suffixes: tuple[str, ...] = (".toml",)
) -> Path:
    """A file path, or the name of a `<name>.toml` shipped in `directory` ('debug', 'paper')."""
    path = Path(name_or_path)
    if path.suffix in suffixes and path.is_file():
        return path
    candidate = directory / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    expected = " or ".join(suffixes)
    if path.is_file():
        raise ConfigError(
            f"{option}={name_or_path!r} is a file but not a {expected} file; "
            f"rename it to end in {expected}"
        )
    if path.is_dir():
        raise ConfigError(f"{option}={name_or_path!r} is a folder, not a {expected} file")
    known = ", ".join(sorted(p.stem for p in directory.glob("*.toml")))
    raise ConfigError(f"{option}={name_or_path!r} is neither a file nor one of: {known}")


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe name ('debug') or a path to a TOML or JSON file."""
    return resolve_named_file(name_or_path, RECIPE_DIR, "--config", (".toml", ".json"))


def _unique_keys(path: Path) -> Any:
    """A json object_pairs_hook refusing a key named twice (json would keep the last)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        record = dict(pairs)
        if len(record) < len(pairs):
            names = [k for k, _ in pairs]
            repeated = next(k for i, k in enumerate(names) if k in names[:i])
            raise ConfigError(f"{path}: cannot parse recipe: key {repeated!r} appears twice")
        return record

    return hook


def _check_document(values: Any, cls: type, where: Path, prefix: str = "") -> None:
    """Before merging: a recipe is a mapping whose sections (dataclass fields) are mappings."""
    if not isinstance(values, dict):
        kinds = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
        kind = kinds.get(type(values), "a number")
        if not prefix:
            raise ConfigError(
                f"{where}: a recipe must be a table/object of sections and keys "
                f'(e.g. {{"train": {{"lr": 0.001}}}}), got {kind}'
            )
        section = prefix.rstrip(".")
        raise ConfigError(f"{where}: {section} is a section; it must hold keys, got {kind}")
    for name, annotation in _field_types(cls).items():
        if name in values and dataclasses.is_dataclass(annotation):
            _check_document(values[name], annotation, where, f"{prefix}{name}.")


def read_recipe(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".json":
            values = json.loads(path.read_text(), object_pairs_hook=_unique_keys(path))
        else:
            values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot parse recipe: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: cannot parse recipe: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read recipe ({err.strerror})") from None
    _check_document(values, JobConfig, path)
    return values


def load_config(recipe: str | None = None, overrides: list[str] | None = None) -> JobConfig:
    """Defaults <- recipe file <- CLI overrides, validated."""
    values: dict[str, Any] = {}
    if recipe:
        values = read_recipe(resolve_recipe(recipe))
    if overrides:
        values = _merge(values, parse_overrides(overrides))
    return _build(JobConfig, values, "")


def nest_dotted(values: dict[str, Any], where: str = "overrides") -> dict[str, Any]:
    """``{"train.lr": 1e-3}`` -> ``{"train": {"lr": 1e-3}}`` (typed values, as a TOML file has)."""
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"{where}: malformed config key {dotted!r}")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {dotted!r} conflicts with another key")
        node[parts[-1]] = value
    return nested


def load_layered_config(
    recipe: str | None, layers: list[dict[str, Any]], overrides: list[str] | None = None
) -> JobConfig:
    """Defaults <- recipe <- each nested layer in turn <- CLI overrides, validated."""
    values: dict[str, Any] = read_recipe(resolve_recipe(recipe)) if recipe else {}
    for layer in layers:
        values = _merge(values, layer)
    if overrides:
        values = _merge(values, parse_overrides(overrides))
    return _build(JobConfig, values, "")


def config_from_dict(values: dict[str, Any]) -> JobConfig:
    """Rebuild a JobConfig from `to_dict()` output (e.g. a run's config.json)."""
    return _build(JobConfig, values, "")


def check_run_dir(run_dir: str) -> Path:
    """`run_dir` as a Path, checked before anything is written: a folder (existing or to be
    created) this user can write, not a file or a path under a file."""
    path = Path(run_dir)
    existing = path
    for existing in (path, *path.parents):
        try:
            if existing.exists():
                break
        except OSError as err:  # e.g. a parent folder this user may not enter
            raise ConfigError(f"run_dir={run_dir!r}: cannot inspect {existing} ({err})") from None
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise ConfigError(f"run_dir={run_dir!r} {where}, not a folder; choose another --run_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"run_dir={run_dir!r}: {existing} is not writable by this user; "
            "choose another --run_dir"
        )
    return path


def save_config(config: JobConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def with_overrides(config: JobConfig, overrides: list[str]) -> JobConfig:
    """A copy of `config` with CLI-style overrides (``--section.key=value``) applied, coerced
    and validated against the rest of `config`."""
    return config_from_dict(_merge(config.to_dict(), parse_overrides(overrides)))


def replace_section(config: JobConfig, section: str, **changes: Any) -> JobConfig:
    """A copy of `config` with keys of one section changed (validated again)."""
    values = config.to_dict()
    values[section] = {**values[section], **changes}
    return config_from_dict(values)
