"""The ``search:`` and ``trial:`` sections of the recipe's schema (:mod:`agora.config.schema`): Agora's
rounds over Θ, their budget, where their fits run (Ray), and what a search writes into each fit's recipe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    """Agora's rounds over Θ (docs/method.md, "The loop"); see :mod:`agora.search`.

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
