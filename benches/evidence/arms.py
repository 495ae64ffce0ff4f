"""The arms of the evidence bench: what each one trains on, with the same student, D, E_sel, lr grid,
epochs and optimiser steps (an Agora epoch draws |D| rows).

- ``plain``: fine-tuning on D (Agora off).
- ``plain+egen``: fine-tuning on D and E_gen's labelled rows: the labels Agora sees (E_gen's 200 gold
  labels drive its generation), given to plain fine-tuning.
- ``pool-kd``: distillation on D and on random rows of the unlabelled pool labelled by the teacher
  (``agora.pool_rows``), as many as the ``agora-nearest`` fit of the same seed and lr had the teacher
  label: the sharp baseline for Agora's claim that labels spent near the student's mistakes are
  worth more than labels spent on random inputs.
- ``tinybert``: TinyBERT-style augmentation: EDA variants of every row of D, soft teacher labels,
  distillation.
- ``agora-eda``: Agora in one run, EDA variants of E_gen's mistakes.
- ``agora-nearest``: Agora in one run, the pool's rows nearest to E_gen's mistakes (``generator: nearest``).

Every Agora setting not named here is the shipped default (:class:`agora.config.AgoraConfig`);
``--agora KEY=VALUE`` changes one for the two Agora arms, ``--variant NAME=KEY=VALUE,...`` adds an arm
``agora+NAME`` (the exploration of Agora's settings runs these against the same plain fits).
"""

from __future__ import annotations

ARMS = ("plain", "plain+egen", "pool-kd", "tinybert", "agora-eda", "agora-nearest")
DISTIL = {"alpha": 0.5, "temperature": 2.0}
CONTRASTS = (("agora-nearest", "plain", "Agora vs plain"),
             ("agora-nearest", "pool-kd", "Agora-nearest vs pool-kd (equal teacher labels)"),
             ("agora-eda", "tinybert", "Agora-EDA vs TinyBERT-style"))
"""Fixed before the run: (arm, baseline, name); Holm's correction runs over all of them and every task.
On a control task (CoLA) only the first is tested: Agora must lose nothing significant there."""


def needs_pool(arm: str) -> bool:
    return arm in ("pool-kd", "agora-nearest") or arm.startswith("agora+")


def agora_section(arm: str, agora_settings: dict, variants: dict[str, dict], budget: int | None = None) -> dict:
    """The ``agora:`` section of an arm (``budget``: pool-kd's rows)."""
    if arm in ("plain", "plain+egen"):
        return {"enabled": False}
    if arm == "pool-kd":
        if budget is None:
            raise ValueError("pool-kd needs the agora-nearest fit's teacher-labelled rows as its budget")
        return {"enabled": True, "expand_every_n_epochs": 0, "pool_rows": budget, **DISTIL}
    if arm == "tinybert":
        return {"enabled": True, "expand_every_n_epochs": 3, "expand_from": "train", "variants_per_source": 4,
                "generator": "eda", "generated_targets": "soft", "balance_generated": False, "gamma": 0.0, **DISTIL}
    if arm == "agora-eda":
        return {"enabled": True, **agora_settings, "generator": "eda"}
    if arm == "agora-nearest":
        return {"enabled": True, **agora_settings, "generator": "nearest"}
    if arm in variants:
        return {"enabled": True, **agora_settings, **variants[arm]}
    raise SystemExit(f"unknown arm {arm!r}: arms are {', '.join(ARMS)}, or agora+NAME from --variant NAME=...")


def teacher_labelled_generated(report: dict) -> int:
    """Generated rows a fit had the teacher label (every variant scored, kept or not): pool-kd's budget."""
    return sum(e.get("scored") or 0 for e in report.get("epochs", []))


def teacher_rows_labelled(report: dict) -> int:
    """Every row a fit had the teacher label: D's rows, pool rows drawn at the start, generated variants."""
    summary = report.get("teacher") or {}
    return ((summary.get("train_rows_scored") or 0) + (summary.get("pool_rows_scored") or 0)
            + teacher_labelled_generated(report))
