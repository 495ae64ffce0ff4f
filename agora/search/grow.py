"""Growing D between rounds: the best student's mistakes on E_gen -> G -> teacher -> filters.

The expansion step is :func:`agora.expand.expand`, the same pure function the in-run callback
uses, with the same settings (``agora.generator``, ``variants_per_mistake``,
``min_teacher_confidence``, ``balance_generated``, ``expand_from``). The teacher scores through
its Arrow cache (shared with the fits' callbacks), so an input is scored once across rounds,
θs, replays and reruns. Variants already in D, in D's additions or in E are dropped.
"""

from __future__ import annotations

import time

import numpy as np

from agora.config import RunConfig


class TeacherExpander:
    """Holds D's additions (``rows``, as written to ``<run>/search/added.jsonl``) and grows them.

    E is carved exactly as the fits carve it (same data module, same ``e_seed``).
    """

    def __init__(self, cfg: RunConfig, e_seed: int, rows: list[dict] | None = None):
        from agora.callback import build_teacher
        from agora.config import validate_recipe
        from agora.datamodule import TaskDataModule
        from agora.modeling import load_tokenizer
        from agora.paths import cache_dir
        from agora.tasks import load_task

        self.cfg, self.card = cfg, load_task(cfg.task)
        self.regression = self.card.format == "regression"
        tokenizer, _ = load_tokenizer(cfg.model)
        from agora.search.loop import trial_base

        fit_cfg = validate_recipe({**trial_base(cfg), "trial": {"e_seed": e_seed}})
        self.dm = TaskDataModule(fit_cfg, self.card, tokenizer).load(predict=False)
        self.teacher = build_teacher(cfg, self.card)
        self.teacher.attach_cache(cfg.teacher.cache_dir or cache_dir(cfg.data.cache_dir) / "teacher")
        if cfg.teacher.device != "auto":
            self.teacher.device = cfg.teacher.device
        else:
            import torch

            self.teacher.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.rows: list[dict] = list(rows or [])

    def grow(self, mistakes: list[int], key: str) -> dict:
        """Append the kept variants of this round's sources to ``rows``; returns the expansion stats
        (plus ``teacher_calls``)."""
        from agora.expand import expand
        from agora.search.loop import ADDED_IDX_BASE

        acfg, card = self.cfg.agora, self.card
        train = card.train_split
        if acfg.expand_from == "train":
            idx, inputs, labels = self.dm.inputs(train)
        else:
            idx, inputs, labels = self.dm.inputs("e_gen")
            if acfg.expand_from == "mistakes":
                keep = np.isin(idx, np.asarray(mistakes, dtype=np.int64))
                idx, inputs, labels = idx[keep], [x for x, k in zip(inputs, keep) if k], labels[keep]
        seen = {tuple(r["inputs"]) for r in self.rows}
        d_labels = self.dm.inputs(train)[2]
        for name in (train, "e_gen", "e_sel"):
            seen.update(self.dm.inputs(name)[1])
        prior = None
        if acfg.balance_generated and not self.regression:
            counts = np.bincount(np.asarray(d_labels, np.int64), minlength=card.num_labels)
            prior = counts / counts.sum()
        names = card.labels if card.labels else [str(i) for i in range(card.num_labels)]
        calls, start = self.teacher.forward_calls, time.perf_counter()
        result = expand(inputs, idx, labels, self.teacher.score, generator=acfg.generator,
                        n_per_source=acfg.variants_per_mistake, seed=self.cfg.seed, key=key,
                        settings=acfg.generator_settings, min_confidence=acfg.min_teacher_confidence,
                        class_prior=prior, label_names=None if self.regression else names,
                        regression=self.regression, seen=seen, require_agreement=acfg.require_agreement)
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
