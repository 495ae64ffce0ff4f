"""The recipe's typed schema: one pydantic model per section of the YAML files in ``recipes/``.

Loading, overrides and error messages are in :mod:`agora.config.load`; Θ (``search:``) is
enumerated and every θ's recipe validated in :mod:`agora.config.space`, both when the recipe enters.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agora.config.search_schema import (RAY_EXTRA, BudgetConfig, RayConfig, SearchConfig,  # noqa: F401
                                        TrackerLink, TrialConfig, _Section)


class ModelConfig(_Section):
    name: str = "amazon/bort"
    """Hub id or local directory of the student encoder (BORT by default)."""
    tokenizer: str | None = None
    """Tokenizer location when it differs from ``name`` (BORT: the RoBERTa tokenizer)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """``random`` builds the architecture from the config only (benchmarks, tests)."""
    pair_format: Literal["auto", "single_sep", "tokenizer"] = "auto"
    """``single_sep`` is BORT's ``<s> A </s> B </s>``; ``auto`` picks it for BORT-shaped models."""
    freeze_word_embeddings: bool = False
    """Freeze the word-embedding table (BORT's 51M of 56M parameters dominate the CPU step)."""
    first_token_last_layer: bool = True
    """The last layer computes only the first token, the one the head reads: exact (the exported model
    computes every position and gives the same logits), about 16% less compute per step for BORT
    (:mod:`agora.fit.first_token`); applied to BERT and RoBERTa classification / multiple-choice heads."""
    head_init_std: float = Field(0.02, gt=0)
    dropout: float | None = Field(None, ge=0, lt=1)


class OptimConfig(_Section):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    """Decoupled and lr-scaled (BERTAdam semantics): each step multiplies weights by 1 - lr * wd."""
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    eps: float = Field(1e-6, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)


class DataConfig(_Section):
    dir: str | None = None
    """Root of the original benchmark files; defaults to ``$AGORA_DATA_DIR``."""
    source: Literal["auto", "local", "hub"] = "auto"
    files: dict[str, str] = Field(default_factory=dict)
    """Split -> a file of the card's layout replacing the card's own, relative to ``dir`` or absolute,
    e.g. ``{train: superglue/FewGLUE/BoolQ/train.jsonl}``; ``axb/test`` names a predicted task's split."""
    max_length: int = Field(128, ge=8)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    bucket_by_length: bool = True
    eval_dev: Literal["every_epoch", "at_end"] = "every_epoch"
    """When the dev splits are scored. ``at_end``: each epoch scores only the split that picks the best
    checkpoint (E_sel, or dev with ``agora.eval_on: dev``) and E_gen where Agora needs its mistakes; the
    dev splits are scored once, on the best checkpoint. The same final scores, and a quarter to a third
    less time on a small train set, where scoring dev costs as much as training."""
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    max_predict_samples: int | None = Field(None, ge=1)
    cache_dir: str | None = None
    """Arrow cache of parsed and tokenized splits; defaults to ``~/.cache/agora``."""
    unlabelled: str | None = None
    """Unlabelled in-domain text: a file in the task's own format (relative to ``dir`` or absolute),
    read by the task's reader with its labels ignored, or ``train`` (the train split's inputs).
    Rows equal to a row of D, E or dev are dropped. Agora draws from it: ``generator: nearest``
    and ``agora.pool_rows`` (:mod:`agora.data.pool`)."""


class TeacherConfig(_Section):
    """The oracle S: a trained sequence-classification (or multiple-choice) checkpoint."""

    path: str | None = None
    """Hub id or local directory (model + its own tokenizer); it scores raw text."""
    label_map: dict[str, str] | None = None
    """Teacher label -> task label, where the names differ (labels are matched by name)."""
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(256, ge=8)
    device: str = "auto"
    """``auto``: the student's device on rank 0 (the teacher runs on rank 0 only)."""
    cache_dir: str | None = None
    """Teacher cache root; defaults to ``<data cache dir>/teacher`` (shared by runs and rounds)."""


class SelectConfig(_Section):
    """How Agora chooses the rows it adds (``agora.select``): made by the generator G from each source
    (``by: generator``, the default), or chosen from the unlabelled pool where the student disagrees most
    with the teacher (``by: disagreement``; needs ``data.unlabelled``). See :mod:`agora.method.select`."""

    by: Literal["generator", "disagreement"] = "generator"
    candidates: Literal["pool", "neighbours"] = "pool"
    """``pool``: every pool row; ``neighbours``: the ``neighbours`` pool rows nearest to each source (E_gen's
    mistakes, or what ``expand_from`` names), the source being the row's anchor."""
    neighbours: int = Field(32, ge=1)
    rows: int | None = Field(None, ge=1)
    """Rows chosen per expansion; default ``variants_per_source`` x the sources (what G would have made)."""
    confidence: Literal["weight", "gate", "none"] = "weight"
    """How the teacher's confidence enters the ranking: ``weight`` multiplies the divergence by it;
    ``gate`` keeps only rows at or above ``min_teacher_confidence`` (as does ``weight``); ``none``."""
    per_anchor: int | None = Field(None, ge=1)
    """At most this many rows per anchor (``candidates: neighbours``)."""
    near_duplicate: float | None = Field(0.95, gt=0, le=1)
    """Skip a candidate whose cosine similarity to a row of D, E or a row already chosen is above this
    (None: no cut)."""
    random_fraction: float = Field(0.0, ge=0, le=1)
    """Share of each expansion's rows drawn uniformly from the pool instead of by rank."""
    random_fraction_final: float | None = Field(None, ge=0, le=1)
    """Given: the share moves linearly from ``random_fraction`` (first expansion) to this (last epoch)."""


class AgoraConfig(_Section):
    """Settings of :class:`agora.method.callback.AgoraCallback`; see its method card and docs/method.md."""

    enabled: bool = False
    """Off: plain fine-tuning, the baseline every Agora result is compared with."""
    # -- E: the rows whose mistakes drive generation (E_gen) and that rank models (E_sel)
    eval_on: Literal["train_slice", "dev"] = "train_slice"
    """``train_slice``: E is carved from train (kept out of D); ``dev``: E = dev (paper-faithful)."""
    e_size: int | None = Field(None, ge=2)
    """Rows of E; default: the dev set's size, capped at ``e_max_fraction`` of train."""
    e_max_fraction: float = Field(0.2, gt=0, lt=1)
    e_gen_size: int | None = Field(None, ge=1)
    """Rows of E_gen (whose mistakes drive generation); the rest of E is E_sel (which ranks). Default:
    half of E. A large E_sel ranks arms finely (a 1,000-row E_sel has a standard error near 1.4 points)."""
    # -- expand
    expand_every_n_epochs: int = Field(1, ge=0)
    """0: never expand inside a run (only the outer loop does)."""
    expand_from: Literal["mistakes", "all", "train"] = "mistakes"
    """The sources of variants: E_gen's mistakes, every row of E_gen, or every row of D."""
    variants_per_source: int = Field(4, ge=1)
    """Variants G makes of each source row (a mistake, a row of E_gen or of D: ``expand_from``)."""
    generator: str = "eda"
    """``eda``, ``mlm``, ``nearest`` (the unlabelled pool's rows nearest to each source: needs
    ``data.unlabelled``) or an import path ``package.module:function``."""
    generator_settings: dict[str, Any] = Field(default_factory=dict)
    min_teacher_confidence: float = Field(0.0, ge=0, le=1)
    require_agreement: bool = False
    """Keep a generated row only if the teacher's label equals its source's gold label (regression:
    within 0.5): the teacher's own mistakes are not taught to the student."""
    balance_first: bool = False
    """With ``require_agreement``: balance classes before the agreement check (default: after it)."""
    balance_by: Literal["teacher", "source"] = "teacher"
    """What ``balance_generated`` balances on: the teacher's label, after it has scored every variant; or,
    where the candidates are known before the teacher scores them (``nearest``), the source's gold
    label, so the teacher is never asked about a row that is then thrown away."""
    balance_generated: bool = True
    """Cap each class of the generated rows to D's class proportions (classification). On by default:
    without it the generated rows follow the student's skew and a student can collapse to one class
    (``benches/results/EXPLORATION.md``)."""
    pool_rows: int | Literal["all"] = 0
    """Rows drawn at random from ``data.unlabelled``, labelled by the teacher and added to the training
    rows when the fit starts (distillation on unlabelled data; 0: none; ``all``: the whole pool, each
    epoch drawing its |D| rows uniformly from D and the pool, under the ``rho`` cap)."""
    select: SelectConfig = Field(default_factory=SelectConfig)
    expand_at_start: bool = False
    """Expand once before the first epoch too (from the pre-trained student's mistakes and disagreement),
    so the added rows get as many draws as rows given at the start."""
    # -- distil
    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the soft (teacher) term; 0 = hard labels only."""
    temperature: float = Field(2.0, gt=0)
    generated_targets: Literal["soft", "hard"] = "soft"
    # -- reweight
    gamma: float = Field(0.0, ge=0)
    """Strength of metric-based reweighting; 0 = uniform (before the ``rho`` cap)."""
    rho: float = Field(0.5, ge=0, le=1)
    """Largest share of the total weight held by generated rows."""
    reweight_by: Literal["loss", "error"] = "loss"
    reweight_mode: Literal["loss", "sampler"] = "loss"
    """``loss``: weights multiply the loss; ``sampler``: rows are drawn in proportion to them."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """``variants_per_mistake`` is the earlier name of ``variants_per_source`` (recipes and run dirs
        written before the rename still load)."""
        if isinstance(data, dict) and "variants_per_mistake" in data:
            if "variants_per_source" in data:
                raise ValueError("agora.variants_per_mistake is the earlier name of agora.variants_per_source: "
                                 "give only variants_per_source")
            warnings.warn("agora.variants_per_mistake is now called agora.variants_per_source", DeprecationWarning,
                          stacklevel=2)
            data = {("variants_per_source" if k == "variants_per_mistake" else k): v for k, v in data.items()}
        return data

    @field_validator("pool_rows")
    @classmethod
    def _pool_rows(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"give a number of rows >= 0, or 'all' (got {value})")
        return value

    @field_validator("generator")
    @classmethod
    def _generator_exists(cls, value: str) -> str:
        from agora.method.generators.registry import spec_of

        spec_of(value)  # registered, or an import path that imports (ValueError naming the choices)
        return value

    def needs_pool(self) -> bool:
        """Agora draws from the unlabelled pool: the generator (declared in its registry entry), or
        ``select.by: disagreement``."""
        from agora.method.generators.registry import spec_of

        return self.enabled and (spec_of(self.generator).needs_pool or self.select.by == "disagreement")

    def needs_teacher(self) -> bool:
        return self.enabled and (self.alpha > 0 or self.expand_every_n_epochs > 0 or bool(self.pool_rows)
                                 or self.expand_at_start)


class OutputConfig(_Section):
    dir: str | None = None
    """Run directory; defaults to ``runs/<task>-<timestamp>``."""
    export: bool = True
    predict: bool = True
    save_checkpoints: bool = True
    resume_from: str | None = None
    """A Lightning checkpoint to resume the fit from, or ``last`` (``<run>/checkpoints/last.ckpt``)."""
    progress_every_s: float = Field(default=30.0, gt=0)
    """Where stderr is not a terminal (a log, ``nohup``, CI, a Ray worker), a fit prints one plain progress
    line at each epoch's end and at most this often in between (:mod:`agora.fit.progress`); a terminal
    shows Lightning's progress bar instead."""
    overwrite: bool = False
    """Run into a ``dir`` that holds an earlier run (finished or not): its outputs are deleted first. Without
    it (and without ``resume_from``) such a dir is refused, so a finished run is never replaced by accident."""
    loggers: list[Literal["csv", "tensorboard", "mlflow", "wandb"]] = Field(default_factory=lambda: ["csv"])
    """Experiment trackers (Lightning's loggers; :mod:`agora.fit.trackers`): ``csv`` (``logs/metrics.csv``) is
    always on; ``tensorboard``, ``mlflow`` and ``wandb`` need their extra (``agora-finetune[tracking]``)."""
    experiment: str | None = None
    """The MLflow experiment and the W&B project; default: ``agora-<task>``."""
    mlflow_uri: str | None = None
    """MLflow's tracking URI; default: a file store in ``<run dir>/mlruns`` (a search's, for its fits)."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """``offline``: W&B writes under ``<run dir>/wandb`` only (``wandb sync`` uploads it later)."""
    push_to_hub: str | None = None
    """A Hub repo id (``user/name``): ``best/`` and its model card are uploaded there when the run ends."""
    hub_private: bool = True
    """The repo ``push_to_hub`` creates is private unless this is false."""

    @field_validator("loggers")
    @classmethod
    def _trackers_installed(cls, value: list[str]) -> list[str]:
        from agora.config.tracking import check_trackers

        return check_trackers(value)

    @model_validator(mode="after")
    def _push_possible(self) -> "OutputConfig":
        from agora.config.tracking import check_push

        check_push(self.push_to_hub, self.export)
        return self


class RunConfig(_Section):
    task: str
    """Task card name (``rte``) or path to a task card YAML."""
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    agora: AgoraConfig = Field(default_factory=AgoraConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    trainer: dict[str, Any] = Field(default_factory=dict)
    """Passed through to ``lightning.Trainer`` (max_epochs, precision, strategy, ...), every key and value
    checked against its signature (:mod:`agora.config.trainer_flags`); ``precision: auto`` (the default) is
    resolved for the machine at the start of a run (:mod:`agora.fit.precision`)."""
    output: OutputConfig = Field(default_factory=OutputConfig)
    search: SearchConfig | None = None
    """Agora's rounds over a hyperparameter space Θ; absent: a single fit."""
    trial: TrialConfig | None = None

    @field_validator("trainer")
    @classmethod
    def _trainer_flags(cls, value: dict[str, Any]) -> dict[str, Any]:
        from agora.config.trainer_flags import check_trainer

        return check_trainer(value)

    @model_validator(mode="after")
    def _teacher_given(self) -> "RunConfig":
        if self.agora.needs_teacher() and not self.teacher.path:
            raise ValueError(
                "agora: expansion (expand_every_n_epochs > 0) and distillation (alpha > 0) need a teacher: "
                "set teacher.path, or set agora.expand_every_n_epochs: 0 and agora.alpha: 0"
            )
        return self

    _space: Any = PrivateAttr(default=None)
    """Θ with every θ's recipe validated (:class:`agora.config.space.Space`), set where the recipe enters."""

    @model_validator(mode="after")
    def _pool_given(self) -> "RunConfig":
        a = self.agora
        if a.enabled and not self.data.unlabelled:
            if a.needs_pool():
                what = "select.by: disagreement" if a.select.by == "disagreement" else f"generator: {a.generator}"
                raise ValueError(f"agora.{what} draws from unlabelled rows: set data.unlabelled "
                                 "(a file in the task's own format, or 'train')")
            if a.pool_rows:
                raise ValueError("agora.pool_rows draws from unlabelled rows: set data.unlabelled "
                                 "(a file in the task's own format, or 'train'), or agora.pool_rows: 0")
        return self

    @model_validator(mode="after")
    def _search_keys(self) -> "RunConfig":
        if self.search is not None and self.trial is not None:
            raise ValueError("a recipe has either search: (Agora's rounds) or trial: (one fit of them), not both")
        if self.search is not None:
            from agora.config.space import check_keys

            check_keys(self, self.search)
        return self

    @property
    def space(self):
        """Θ of ``search:`` (:class:`agora.config.space.Space`): the θs in order, each with its validated
        recipe; None without ``search:``."""
        return self._space

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


