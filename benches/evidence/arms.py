"""The arms of the evidence bench: what each one trains on, with the same student, D, E_sel, lr grid,
epochs and optimiser steps (an Agora epoch draws |D| rows).

The arms of protocol v3 (:data:`ARMS`, the default):

- ``plain``: fine-tuning on D (Agora off).
- ``pool-kd``: distillation on D and on random rows of the unlabelled pool labelled by the teacher
  (``agora.pool_rows``), as many as the pool rows the ``agora-nearest`` fit of the same seed had the
  teacher label (its random ``pool_rows`` at the start, given by ``--agora pool_rows=N``, and its
  scored neighbours), that fit being the one at agora-nearest's chosen lr: the fit pool-kd is compared
  with, whatever pool-kd's own lr (equal teacher labels).
- ``pool-all``: distillation on the whole teacher-labelled pool (``agora.pool_rows: all``), each epoch
  drawing its |D| rows uniformly from D and the pool under the ``rho`` cap, no expansion (equal
  optimiser steps).
- ``agora-nearest``: Agora in one run, the pool's rows nearest to E_gen's mistakes (``generator: nearest``).
- ``agora-best``: Agora with the settings the exploration chose (:mod:`evidence.settings`: ``--best``
  or ``benches/results/agora-best.yaml``), over the shipped defaults; ``--agora`` does not reach it.

Earlier arms, run when named in ``--arms``: ``plain+egen`` (fine-tuning on D and E_gen's labelled rows:
the labels Agora sees), ``tinybert`` (TinyBERT-style: EDA variants of every row of D, soft teacher
labels, distillation), ``agora-eda`` (Agora in one run, EDA variants of E_gen's mistakes).

Every Agora setting not named here is the shipped default (:class:`agora.config.AgoraConfig`);
``--agora KEY=VALUE`` changes one for ``agora-eda``, ``agora-nearest`` and the variants;
``--variant NAME=KEY=VALUE,...`` adds an arm ``agora+NAME`` (the exploration of Agora's settings runs
these against the same plain fits).
"""

from __future__ import annotations

from evidence.settings import merge

ARMS = ("plain", "pool-kd", "pool-all", "agora-nearest", "agora-best")
"""Protocol v3's arms, the default."""
EARLIER_ARMS = ("plain+egen", "tinybert", "agora-eda")
KNOWN_ARMS = ARMS + EARLIER_ARMS
DISTIL = {"alpha": 0.5, "temperature": 2.0}
CONTRASTS = (("agora-best", "pool-all", "Agora-best vs pool-all (equal optimiser steps)"),
             ("agora-best", "pool-kd", "Agora-best vs pool-kd (as many teacher labels as agora-nearest)"),
             ("agora-best", "plain", "Agora-best vs plain"))
"""Protocol v3's, fixed before the run: (arm, baseline, name); Holm's correction runs over all of them
and every task. On a control task (CoLA) only the one against ``plain`` is tested: Agora must lose
nothing significant there."""


def contrasts_of(control: bool) -> tuple[tuple[str, str, str], ...]:
    return tuple(c for c in CONTRASTS if c[1] == "plain") if control else CONTRASTS


def needs_pool(arm: str) -> bool:
    return arm in ("pool-kd", "pool-all", "agora-nearest", "agora-best") or arm.startswith("agora+")


def check_arms(arms: list[str], variants: dict[str, dict], best: dict | None = None) -> None:
    """Every arm known; pool-kd only beside agora-nearest (its budget); agora-best only with its settings
    (checked before anything is trained)."""
    for arm in arms:
        if arm not in KNOWN_ARMS and arm not in variants:
            raise SystemExit(f"unknown arm {arm!r}: arms are {', '.join(KNOWN_ARMS)}, or agora+NAME from "
                             "--variant NAME=...")
    if "pool-kd" in arms and "agora-nearest" not in arms:
        raise SystemExit("arm pool-kd labels as many pool rows as the agora-nearest fit of its seed: "
                         "add agora-nearest to --arms")
    if "agora-best" in arms:
        agora_section("agora-best", {}, {}, best=best)


def agora_section(arm: str, agora_settings: dict, variants: dict[str, dict], budget: int | None = None,
                  best: dict | None = None) -> dict:
    """The ``agora:`` section of an arm (``budget``: pool-kd's rows; ``best``: agora-best's settings)."""
    if arm in ("plain", "plain+egen"):
        return {"enabled": False}
    if arm == "pool-kd":
        if budget is None:
            raise ValueError("pool-kd needs the agora-nearest fit's teacher-labelled pool rows as its budget")
        return {"enabled": True, "expand_every_n_epochs": 0, "pool_rows": budget, **DISTIL}
    if arm == "pool-all":
        return {"enabled": True, "expand_every_n_epochs": 0, "pool_rows": "all", **DISTIL}
    if arm == "agora-best":
        if best is None:
            raise SystemExit("arm agora-best has no settings yet: the exploration of protocol v3 "
                             "(benches/results/EXPLORATION.md) chooses them. Give --best KEY=VALUE[,KEY=VALUE] "
                             "or write them to benches/results/agora-best.yaml, or leave agora-best out of --arms")
        return merge({"enabled": True}, best)
    if arm == "tinybert":
        return {"enabled": True, "expand_every_n_epochs": 3, "expand_from": "train", "variants_per_source": 4,
                "generator": "eda", "generated_targets": "soft", "balance_generated": False, "gamma": 0.0, **DISTIL}
    if arm == "agora-eda":
        return merge({"enabled": True, **agora_settings}, {"generator": "eda"})
    if arm == "agora-nearest":
        return merge({"enabled": True, **agora_settings}, {"generator": "nearest"})
    if arm in variants:
        return merge({"enabled": True, **agora_settings}, variants[arm])
    raise SystemExit(f"unknown arm {arm!r}: arms are {', '.join(KNOWN_ARMS)}, or agora+NAME from --variant NAME=...")


def teacher_labelled_generated(report: dict) -> int:
    """Rows a fit's expansions had the teacher label (every candidate scored, kept or not)."""
    return sum(e.get("scored") or 0 for e in report.get("epochs", []))


def pool_labelled(report: dict) -> int:
    """Pool rows a fit had the teacher label: its random ``pool_rows`` at the start and every row its
    expansions scored (pool-kd's budget, from the agora-nearest fit)."""
    return ((report.get("teacher") or {}).get("pool_rows_scored") or 0) + teacher_labelled_generated(report)


def teacher_rows_labelled(report: dict) -> int:
    """Every row a fit had the teacher label: D's rows, pool rows drawn at the start, generated variants."""
    return ((report.get("teacher") or {}).get("train_rows_scored") or 0) + pool_labelled(report)
