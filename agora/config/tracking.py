"""The recipe's checks for where a run is reported: experiment trackers (``output.loggers``) and the Hub
(``output.push_to_hub``), made when the recipe enters, so a missing package or an offline machine fails
before any work (the trackers themselves: :mod:`agora.fit.trackers`; the upload: :mod:`agora.fit.hub`)."""

from __future__ import annotations

import importlib.util
import os

TRACKERS = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""``output.loggers`` names -> the module each needs (csv: Lightning's own, always on)."""


def extra_command(name: str) -> str:
    """How to install what tracker ``name`` needs: its own extra, or all of them."""
    return f"pip install 'agora-finetune[{name}]' (or 'agora-finetune[tracking]' for every tracker)"


def check_trackers(names: list[str]) -> list[str]:
    """``output.loggers`` with ``csv`` first and no repeats; a tracker whose package is missing is a ValueError
    naming the extra to install."""
    out = ["csv"] + [n for i, n in enumerate(names) if n != "csv" and n not in names[:i]]
    for name in out[1:]:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ValueError(f"output.loggers: {name} needs the '{TRACKERS[name]}' package, which is not installed: "
                             f"{extra_command(name)}, or take {name} out of output.loggers")
    return out


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set to a true value (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def check_repo_id(repo_id: str | None, key: str = "output.push_to_hub") -> str | None:
    """A Hub repo id (``user/name``) this machine can push to: not offline, well formed."""
    if repo_id is None:
        return None
    if hub_offline():
        raise ValueError(f"{key}: {repo_id!r} cannot be pushed: HF_HUB_OFFLINE is set, so the Hub cannot be "
                         f"reached; unset HF_HUB_OFFLINE, or leave {key} unset and push later with "
                         "agora-finetune push <run dir> <repo id>")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{key}: {repo_id!r} is not a Hub repo id ({err}); write it as 'user/name' or "
                         "'organisation/name'") from None
    if "/" not in repo_id:
        raise ValueError(f"{key}: {repo_id!r} has no owner; write it as 'user/name' or 'organisation/name'")
    return repo_id


def check_push(repo_id: str | None, export: bool) -> None:
    """``output.push_to_hub``: a repo id this machine can push to, and an export to push."""
    check_repo_id(repo_id)
    if repo_id and not export:
        raise ValueError("output.push_to_hub uploads the export (best/): set output.export: true, or leave "
                         "push_to_hub unset")
