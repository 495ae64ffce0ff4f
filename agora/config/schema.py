"""The recipe's typed schema: one pydantic model per section of the YAML files in ``recipes/``.

Loading, overrides and error messages are in :mod:`agora.config.load`; Θ (``search:``) is
enumerated and every θ's recipe validated in :mod:`agora.config.space`, both when the recipe enters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class AgoraConfig(_Section):
    """Settings of :class:`agora.method.callback.AgoraCallback`; see its method card and AGORA.md."""

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
    variants_per_mistake: int = Field(4, ge=1)
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
    balance_generated: bool = True
    """Cap each class of the generated rows to D's class proportions (classification). On by default:
    without it the generated rows follow the student's skew and a student can collapse to one class
    (``benches/results/EXPLORATION.md``)."""
    pool_rows: int = Field(0, ge=0)
    """Rows drawn at random from ``data.unlabelled``, labelled by the teacher and added to the training
    rows when the fit starts (distillation on unlabelled data; 0: none)."""
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

    @field_validator("generator")
    @classmethod
    def _generator_exists(cls, value: str) -> str:
        from agora.config.space import check_generator

        check_generator(value)
        return value

    def needs_teacher(self) -> bool:
        return self.enabled and (self.alpha > 0 or self.expand_every_n_epochs > 0 or self.pool_rows > 0)


class OutputConfig(_Section):
    dir: str | None = None
    """Run directory; defaults to ``runs/<task>-<timestamp>``."""
    export: bool = True
    predict: bool = True
    save_checkpoints: bool = True
    resume_from: str | None = None
    """A Lightning checkpoint to resume the fit from, or ``last`` (``<run>/checkpoints/last.ckpt``)."""
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


class BudgetConfig(_Section):
    """What the search may spend; printed before the first fit (see :func:`agora.search.plan`)."""

    max_thetas: int | None = Field(None, ge=1)
    """Size of Θ at the start; a larger grid is thinned to a seeded sample (kept in grid order)."""
    max_fits: int | None = Field(None, ge=1)
    """Fits in the whole search, replays included; a round that does not fit in what is left is not started."""
    max_epochs: int | None = Field(None, ge=1)
    """Training epochs in the whole search (fits x ``trainer.max_epochs``)."""


RAY_EXTRA = "pip install 'agora-finetune[ray]'"
"""How to install what ``search.runner: ray`` needs."""


class RayConfig(_Section):
    """Where the fits of a search run with ``search.runner: ray`` (:mod:`agora.search.ray_runner`)."""

    address: str | None = None
    """``null``: start a local Ray with this machine's resources (listening on loopback only); ``auto``:
    join the cluster this machine belongs to (``ray start``); ``host:port`` or ``ray://host:port``: join
    that cluster."""
    cpus_per_trial: float = Field(1, gt=0)
    """CPUs Ray reserves for each fit; a fit uses that many torch threads (at least 1)."""
    gpus_per_trial: float = Field(0, ge=0)
    """GPUs Ray reserves for each fit (a fraction shares a GPU between fits)."""
    max_concurrent_trials: int | None = Field(None, ge=1)
    """Fits of a round running at once; default: as many as the resources allow."""
    storage_path: str | None = None
    """Where the fits' run dirs land when the machines share no filesystem with this one (a path every
    node sees, or a URI such as ``s3://bucket/agora``); the driver gathers each into ``output.dir``.
    Default: the fits write straight into ``output.dir`` (one machine, or ``output.dir`` on a shared disk)."""
    max_failures: int = Field(2, ge=0)
    """Times a fit is restarted after its worker was lost (Ray Tune's ``FailureConfig``); an exception
    or a NaN in the fit itself is not retried: the fit is recorded as failed and pruned."""

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is None or value == "auto" or value.startswith("ray://"):
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"search.ray.address {value!r}: give null (a local Ray), 'auto' (the cluster of this "
                             "machine), 'host:port' or 'ray://host:port'")
        return value


class SearchConfig(_Section):
    """Agora's rounds over Θ (AGORA.md, "The loop"); see :mod:`agora.search`.

    Θ is a grid (``space``: dotted recipe key -> values, most influential key first) or an explicit
    list (``trials``: mappings with the same keys, ordered as in the first). Any recipe field can be
    searched (``optim.lr``, ``seed``, ``data.batch_size``, ``agora.alpha``, ``trainer.max_epochs``).
    """

    space: dict[str, list[Any]] = Field(default_factory=dict)
    trials: list[dict[str, Any]] = Field(default_factory=list)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    min_prune_fraction: float = Field(0.25, ge=0, le=1)
    """Safeguard: each pruning removes at least this share of Θ (rounded up)."""
    max_replays: int = Field(2, ge=0)
    """Replays of a round whose best E_sel score did not improve (fresh seeds, fresh G samples)."""
    max_rounds: int | None = Field(None, ge=1)
    """Stop after this many rounds (replays included); default: until Θ is empty."""
    replay_seed_offset: int = Field(1000, ge=1)
    """A replay's fits use seed + offset x replay number."""
    runner: Literal["local", "ray"] = "local"
    """Where the fits run: ``local``, one after the other in this process; ``ray``, the fits of a round
    at once as the trials of a Ray Tune experiment (``search.ray``; needs ``agora-finetune[ray]``). The
    search is the same either way (same θs, seeds, E, pruning, replays)."""
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("runner")
    @classmethod
    def _ray_installed(cls, value: str) -> str:
        import importlib.metadata

        if value == "ray":
            try:
                importlib.metadata.distribution("ray")
            except importlib.metadata.PackageNotFoundError:
                raise ValueError(f"search.runner: ray needs Ray, which is not installed: {RAY_EXTRA} "
                                 "(or set search.runner: local)") from None
        return value

    @model_validator(mode="after")
    def _one_theta_source(self) -> "SearchConfig":
        from agora.config.space import check_space

        check_space(self.space, self.trials)
        return self


class TrackerLink(_Section):
    """Where a search's trackers are, written by the search into each fit's recipe (:mod:`agora.fit.trackers`)."""

    dir: str
    """The search's run dir: its ``tensorboard/<fit>/``, ``mlruns`` and ``wandb/`` hold every fit."""
    group: str
    """The search's name: the W&B group and the MLflow parent run's name."""
    mlflow_parent: str | None = None
    """The MLflow run of the search, parent of each fit's run."""
    tags: dict[str, str] = Field(default_factory=dict)
    """The fit's round, replay, θ and name."""


class TrialConfig(_Section):
    """Written by the search (:mod:`agora.search`) into the recipe of each of its fits, so a fit
    reruns alone from its ``config.yaml``; leave it out of recipes of your own."""

    e_seed: int
    """E is carved from train with this seed, the same for every θ, Agora on or off (the plain
    baseline is ranked on the same E_sel); the fit keeps its best epoch by E_sel (dev with
    ``agora.eval_on: dev``)."""
    extra_rows: str | None = None
    """JSONL of rows (``idx``, ``inputs``, ``label``) appended to D after E is carved: D's additions."""
    tracking: TrackerLink | None = None
    """The search's trackers, which the fit logs into as a run of its own (with ``output.loggers``)."""


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
            if a.generator == "nearest":
                raise ValueError("agora.generator: nearest draws from unlabelled rows: set data.unlabelled "
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


