"""Growing D between rounds: the best student's mistakes on E_gen -> G -> teacher -> filters.

The expansion step is :meth:`agora.method.expand.Expander.step`, the one the in-run callback takes,
with the same settings (``agora.generator``, ``variants_per_source``, ``min_teacher_confidence``,
``require_agreement``, ``balance_generated``, ``expand_from``). The teacher scores through its
Arrow cache (shared with the fits' callbacks), so an input is scored once across rounds, θs,
replays and reruns. Variants already in D, in D's additions or in E are dropped. D's additions are
:class:`agora.method.generated.GeneratedRow` records, written to ``<run>/search/added.jsonl``, with
idx from :func:`agora.method.generated.generated_base` of D's idx on (a fit's own generated rows go
above them).
"""

from __future__ import annotations

from agora.config import RunConfig, TrialConfig
from agora.data.cards import load_task
from agora.data.datamodule import TaskDataModule
from agora.fit.model import load_tokenizer
from agora.method.expand import Expander
from agora.method.generated import ExpansionStats, GeneratedRow, generated_base
from agora.method.teacher import attach_teacher, build_teacher
from agora.paths import cache_dir


class Grower:
    """Holds D's additions (``added``) and grows them. E is carved exactly as the fits carve it (same
    data module, same ``e_seed``).

    Args:
        cfg: the search's recipe.
        e_seed: E's seed (the search's, shared by every θ).
        rows: D's additions so far, as read from ``added.jsonl``.
    """

    def __init__(self, cfg: RunConfig, e_seed: int, rows: list[dict] | None = None):
        self.cfg, self.card = cfg, load_task(cfg.task)
        self.regression = self.card.format == "regression"
        tokenizer, _ = load_tokenizer(cfg.model)
        fit_cfg = cfg.model_copy(update={"search": None, "trial": TrialConfig(e_seed=e_seed)})
        self.data = TaskDataModule(fit_cfg, self.card, tokenizer).load(predict=False)
        self.teacher = attach_teacher(build_teacher(cfg, self.card), cfg)
        self.expander = Expander(cfg.agora, self.card, self.teacher, cfg.seed)
        self.expander.prepare(self.data.pool, cfg.teacher.path, cache_dir(cfg.data.cache_dir))
        self.base = generated_base(self.data.inputs(self.card.train_split)[0])
        self.added: list[GeneratedRow] = [GeneratedRow.from_json(r) for r in rows or []]

    def keep(self, n: int) -> None:
        """Keep the first ``n`` additions (those the search's state counts)."""
        del self.added[n:]

    def jsonl(self, n: int | None = None) -> list[dict]:
        """The first ``n`` additions (all: None) as ``added.jsonl`` holds them."""
        return [r.to_json() for r in self.added[:n]]

    def grow(self, mistakes: list[int], key: str) -> ExpansionStats:
        """Append the kept variants of this round's sources to ``added``; returns the step's stats (with
        the teacher's counts and seconds)."""
        expansion = self.expander.step(self.data, mistakes, key, [r.inputs for r in self.added])
        names = None if self.regression else self.expander.names
        self.added += expansion.records(self.base + len(self.added), key, names, self.regression)
        return expansion.stats
