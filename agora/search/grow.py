"""Growing D between rounds: the best student's mistakes on E_gen -> G -> teacher -> filters.

The expansion step is :class:`agora.method.expand.Expander`, the one the in-run callback uses, with
the same settings (``agora.generator``, ``variants_per_mistake``, ``min_teacher_confidence``,
``require_agreement``, ``balance_generated``, ``expand_from``). The teacher scores through its
Arrow cache (shared with the fits' callbacks), so an input is scored once across rounds, θs,
replays and reruns. Variants already in D, in D's additions or in E are dropped.
"""

from __future__ import annotations

import time

from agora.config import RunConfig, TrialConfig
from agora.data.datamodule import TaskDataModule
from agora.data.cards import load_task
from agora.fit.model import load_tokenizer
from agora.method.expand import Expander, Sources, known_inputs
from agora.method.teacher import attach_teacher, build_teacher
from agora.paths import cache_dir

ADDED_IDX_BASE = 1 << 32
"""D's additions get idx ``ADDED_IDX_BASE + j``: above any dataset idx, below the callback's
generated rows (:data:`agora.method.training_set.GENERATED_IDX_BASE`), so a fit treats them as rows of D."""


class Grower:
    """Holds D's additions (``rows``, as written to ``<run>/search/added.jsonl``) and grows them.

    E is carved exactly as the fits carve it (same data module, same ``e_seed``).
    """

    def __init__(self, cfg: RunConfig, e_seed: int, rows: list[dict] | None = None):
        self.cfg, self.card = cfg, load_task(cfg.task)
        self.regression = self.card.format == "regression"
        tokenizer, _ = load_tokenizer(cfg.model)
        fit_cfg = cfg.model_copy(update={"search": None, "trial": TrialConfig(e_seed=e_seed)})
        self.dm = TaskDataModule(fit_cfg, self.card, tokenizer).load(predict=False)
        self.teacher = attach_teacher(build_teacher(cfg, self.card), cfg)
        self.expander = Expander(cfg.agora, self.card, self.teacher.score, cfg.seed)
        self.expander.prepare(self.dm.pool, cfg.teacher.path, cache_dir(cfg.data.cache_dir))
        self.rows: list[dict] = list(rows or [])

    def grow(self, mistakes: list[int], key: str) -> dict:
        """Append the kept variants of this round's sources to ``rows``; returns the expansion stats
        (plus ``teacher_calls`` and ``seconds``)."""
        d = Sources.of(self.dm, self.card.train_split)
        sources = self.expander.sources(Sources.of(self.dm, "e_gen"), d, mistakes)
        seen = known_inputs(self.dm, [r["inputs"] for r in self.rows])
        calls, start = self.teacher.forward_calls, time.perf_counter()
        result = self.expander(sources, key, seen, d.labels)
        names = self.expander.names
        first = len(self.rows)
        for j, (variant, label, probs, source) in enumerate(zip(result.variants, result.labels, result.probs,
                                                                result.source_ids)):
            self.rows.append({"idx": ADDED_IDX_BASE + first + j, "inputs": list(variant),
                              "label": float(label) if self.regression else names[int(label)],
                              "teacher_probs": [round(float(x), 6) for x in probs],
                              "source_idx": int(source), "key": key})
        stats = dict(result.stats)
        stats["teacher_calls"] = self.teacher.forward_calls - calls
        stats["seconds"] = round(time.perf_counter() - start, 3)
        return stats
