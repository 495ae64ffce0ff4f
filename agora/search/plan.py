"""The plan of a search: Θ and what it may cost, known (and printed) before the first fit."""

from __future__ import annotations

import dataclasses

from agora.config import RunConfig, Space, TrialConfig
from agora.data.evalset import EvalSet
from agora.errors import RecipeError
from agora.search.pruning import max_fits


@dataclasses.dataclass
class Plan:
    """Θ (from the recipe, every θ's recipe validated where it entered) and the budget."""

    space: Space
    epochs: list[int]
    """``trainer.max_epochs`` of each θ's fits."""
    worst_case_fits: int
    fit_cap: int | None
    source: str

    @property
    def names(self) -> list[str]:
        return self.space.names

    @property
    def grid_size(self) -> int:
        return self.space.grid_size

    @property
    def thetas(self) -> list[tuple]:
        return [t.values for t in self.space.thetas]

    def text(self, cfg: RunConfig) -> str:
        s = cfg.search
        shape = " x ".join(f"{n} {len(v)}" for n, v in s.space.items()) if s.space else f"{len(self.thetas)} listed"
        lines = [f"search: Θ has {self.space.grid_size} θs ({shape}); order: {', '.join(self.names)}"]
        if len(self.thetas) < self.space.grid_size:
            lines.append(f"  budget.max_thetas keeps a seeded sample of {len(self.thetas)}")
        most = self.worst_case_fits if self.fit_cap is None else min(self.worst_case_fits, self.fit_cap)
        lines.append(f"  at most {most} fits of {max(self.epochs)} epoch(s) each (round 0: {len(self.thetas)} fits; "
                     f"min_prune_fraction {s.min_prune_fraction:g}, max_replays {s.max_replays}"
                     + (f", budget {self.fit_cap} fits" if self.fit_cap is not None else "") + ")")
        lines.append(f"  E: {'the dev set (paper-faithful, eval_on: dev)' if cfg.agora.eval_on == 'dev' else 'carved from train (E_gen / E_sel)'}; "
                     f"Agora {'on' if cfg.agora.enabled else 'off (plain fine-tuning baseline)'}")
        return "\n".join(lines)


def plan(cfg: RunConfig, source: str = "<recipe>") -> Plan:
    """The budget checked against Θ: every error before any fit."""
    s, space = cfg.search, cfg.space
    epochs = [int(t.cfg.trainer.get("max_epochs") or 1) for t in space.thetas]
    if cfg.agora.enabled and not cfg.teacher.path:
        raise RecipeError(f"{source}: a search with agora.enabled labels generated rows with a teacher: set "
                          "teacher.path (or agora.enabled: false for the plain baseline)")
    b = s.budget
    caps = []
    if b.max_fits is not None:
        caps.append(b.max_fits)
    if b.max_epochs is not None:
        if b.max_epochs < max(epochs):
            raise RecipeError(f"{source}: search.budget.max_epochs {b.max_epochs} is smaller than one fit "
                              f"({max(epochs)} epochs, trainer.max_epochs): raise it or lower trainer.max_epochs")
        caps.append(b.max_epochs // max(epochs))
    cap = min(caps) if caps else None
    n = len(space.thetas)
    if cap is not None and cap < n:
        raise RecipeError(f"{source}: the budget ({cap} fits) is smaller than round 0 ({n} θs, one "
                          f"fit each): raise search.budget.max_fits / max_epochs or set search.budget.max_thetas <= {cap}")
    worst = max_fits(n, s.min_prune_fraction, s.max_replays, s.max_rounds)
    return Plan(space, epochs, worst, cap, source)


def split_sizes(cfg: RunConfig, card) -> tuple[int, int]:
    """Rows of train and of the selection (dev) split, after ``data.max_*_samples``."""
    from agora.data.splits import load_split
    from agora.paths import cache_dir, data_dir

    def rows(split: str, limit: int | None) -> int:
        n = len(load_split(card, split, data_dir(cfg.data.dir), cfg.data.source, cache_dir(cfg.data.cache_dir),
                           cfg.data.files.get(split)))
        return n if limit is None else min(n, limit)

    n_dev = rows(card.select_split, cfg.data.max_eval_samples) if card.eval_splits else 0
    return rows(card.train_split, cfg.data.max_train_samples), n_dev


def search_evalset(cfg: RunConfig, card) -> EvalSet:
    """E as the search's fits carve it."""
    return EvalSet.of(cfg.model_copy(update={"search": None, "trial": TrialConfig(e_seed=cfg.seed)}), card)


def check_e_fits(cfg: RunConfig, card, source: str) -> None:
    """E must leave D a row and give each half one: checked on the train split's size, before any fit."""
    if cfg.agora.eval_on == "dev" or cfg.agora.e_size is None:
        return
    n = split_sizes(cfg, card)[0]
    if cfg.agora.e_size > n - 1:
        raise RecipeError(f"{source}: agora.e_size {cfg.agora.e_size} is not smaller than the training set "
                          f"({n} rows{' after data.max_train_samples' if cfg.data.max_train_samples else ''}): "
                          f"set agora.e_size to at most {n - 1}, or leave it unset (the dev size, capped at "
                          f"agora.e_max_fraction of train)")
