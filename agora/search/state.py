"""The search's state, typed: what was trained, how it scored, what was pruned, D's growth.

Saved atomically after every finished fit and every round as ``<run>/search/state.json``; a rerun
of the same recipe into the same ``output.dir`` loads it and continues after the last finished fit.
The JSON keeps the shape of the first (untyped) version, so a state file written by an older
version of this tool loads; a file that does not parse as a state fails with a message naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agora.errors import RecipeError
from agora.files import write_json

STATE_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FitRecord(_Record):
    """One finished fit of a round."""

    trial: str
    theta: int
    round: int
    replay: int
    seed: int | None = None
    score: float | None = None
    """E_sel score of the official metric; None for a failed fit."""
    dev_score: float | None = None
    loglik: float | None = None
    """Mean log-likelihood of E_sel's gold labels: breaks ties between equal scores."""
    failed: str | None = None
    mistakes: list[int] = Field(default_factory=list)
    """idx of E_gen rows the fit's student gets wrong."""
    e_gen_rows: int = 0
    epochs: int = 0
    model_dir: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)


class Best(_Record):
    trial: str
    theta: int
    round: int
    score: float
    dev_score: float | None = None
    model_dir: str | None = None
    loglik: float | None = None


class AddedRecord(_Record):
    """What the expansion after a round did (:class:`agora.method.generated.ExpansionStats`, flat)."""

    sources: int = 0
    variants: int = 0
    scored: int = 0
    kept: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    agreement: float | None = None
    agreement_kept: float | None = None
    label_balance: dict[str, int] | None = None
    agreement_by_label: dict[str, list[int]] | None = None
    teacher_forward_calls: int = 0
    teacher_cache_hits: int = 0
    seconds: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, data: Any) -> Any:
        """A state written before the counter had one name says ``teacher_calls``."""
        if isinstance(data, dict) and "teacher_calls" in data:
            data = {**data, "teacher_forward_calls": data.get("teacher_forward_calls", data["teacher_calls"])}
        return data


class RoundRecord(_Record):
    """A round (or a replay of one): its θs and fits, then the decision taken when it closed."""

    round: int
    replay: int
    seed_offset: int
    thetas: list[int]
    fits: dict[str, FitRecord] = Field(default_factory=dict)
    """θ id (as a string) -> its fit."""
    done: bool = False
    best_before: float | None = None
    d_rows: int = 0
    """D's additions this round's fits trained on."""
    # set when the round closes
    best: int | None = None
    best_score: float | None = None
    improved: bool | None = None
    decision: str | None = None
    """``prune`` or ``replay``."""
    rule: str | None = None
    tie: str | None = None
    """How a tie decided the round (the best or the pruned θ among equal scores), or None."""
    removed: dict[str, str] = Field(default_factory=dict)
    """θ id -> why it was pruned."""
    next_replay: int = 0
    remaining: list[int] | None = None
    added: AddedRecord | None = None
    """The expansion that grew D after this round."""
    d_rows_after: int | None = None


class SearchState(_Record):
    version: int = STATE_VERSION
    fingerprint: str
    names: list[str]
    thetas: list[list[Any]]
    remaining: list[int]
    rounds: list[RoundRecord] = Field(default_factory=list)
    best: Best | None = None
    fits: int = 0
    epochs: int = 0
    d_rows: int = 0
    teacher_forward_calls: int = 0
    """Inputs the teacher scored to grow D (the fits' own counts are in their metrics.json)."""
    stopped: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, data: Any) -> Any:
        """A state written before the counter had one name says ``teacher_calls``."""
        if isinstance(data, dict) and "teacher_calls" in data and "teacher_forward_calls" not in data:
            data = {**data, "teacher_forward_calls": data["teacher_calls"]}
        return data

    def fit_of(self, trial: str) -> FitRecord:
        return next(f for r in self.rounds for f in r.fits.values() if f.trial == trial)

    def save(self, path: Path) -> None:
        write_json(path, self.model_dump(mode="json"), indent=1)

    @classmethod
    def load(cls, path: Path, fingerprint: str, run_dir: Path) -> "SearchState | None":
        """The state saved at ``path`` (None if there is none); a different search's state, or a file
        that is not a state, is an error naming the run dir and the fix."""
        if not path.is_file():
            return None
        try:
            state = cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as err:
            raise RecipeError(f"{path} is not a search state this version can read ({str(err).splitlines()[0]}): "
                              "use another output.dir, or delete the search/ folder to start the search again") from None
        if state.version != STATE_VERSION or state.fingerprint != fingerprint:
            raise RecipeError(f"{run_dir} holds a different search (its recipe differs from this one): "
                              "use another output.dir, or rerun with the recipe saved in its config.yaml")
        return state


def fingerprint(cfg) -> str:
    """What identifies a search: its resolved recipe less ``output`` and less where its fits run
    (``search.runner``, ``search.ray``): a search started on one runner resumes on the other."""
    data = cfg.to_dict()
    data.pop("output", None)
    for key in ("runner", "ray"):
        (data.get("search") or {}).pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
