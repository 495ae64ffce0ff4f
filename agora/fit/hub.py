"""``output.push_to_hub`` and ``agora-finetune push RUN REPO_ID``: a run's export (``best/``, with its model card)
uploaded to a Hub model repo through ``huggingface_hub.HfApi``, private unless asked otherwise.

    agora-finetune push runs/rte-20261125-101500 me/bort-rte            # private
    agora-finetune push runs/rte-20261125-101500/best me/bort-rte --public
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from agora.config.tracking import check_repo_id
from agora.errors import AgoraError, HubError, RecipeError


def export_dir(run: Path) -> Path:
    """The export of ``run``: ``run/best``, or ``run`` itself when it is an export folder."""
    for folder in (run / "best", run):
        if (folder / "config.json").is_file():
            return folder
    raise RecipeError(f"{run}: no exported model to push (no best/config.json); a run exports one unless "
                      "output.export is false")


def refresh_card(folder: Path, ref: str) -> bool:
    """Rewrite ``folder/README.md`` for ``ref`` from the run's ``config.yaml`` and ``metrics.json`` beside the
    export; False (the card left as it is) where they, or the task card, cannot be read."""
    from agora.data.cards import load_task
    from agora.fit import model_card

    run = folder.parent
    try:
        recipe = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        task = load_task(recipe["task"])
    except (OSError, ValueError, KeyError, TypeError, AgoraError):
        return False
    model_card.write(folder, recipe, task, metrics, ref=ref)
    return True


def push(run: Path, repo_id: str, private: bool = True, api=None, announce=print) -> str:
    """Upload ``run``'s export with its card to the model repo ``repo_id`` (created if needed); returns its URL.

    Raises:
        RecipeError: offline (``HF_HUB_OFFLINE``), a malformed repo id, or no export in ``run``.
        HubError: the Hub refused (not logged in, no write access), with what it said.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        check_repo_id(repo_id, "repo id")
    except ValueError as err:
        raise RecipeError(str(err)) from None
    folder = export_dir(Path(run))
    refresh_card(folder, repo_id)
    api = api or HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          commit_message=f"agora-finetune: upload {folder}")
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise HubError(f"push to {repo_id} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                       " (log in with `hf auth login` or set HF_TOKEN, with write access to that repo)") from None
    url = str(url) if url else f"https://huggingface.co/{repo_id}"
    announce(f"pushed {folder} to {url} ({'private' if private else 'public'})")
    return url


def main(argv: list[str]) -> int:
    """``agora-finetune push RUN REPO_ID [--public]``."""
    parser = argparse.ArgumentParser(prog="agora-finetune push",
                                     description="Upload a run's exported model and its card to the Hugging Face Hub.")
    parser.add_argument("run", help="a run dir (its best/ is uploaded) or an export folder")
    parser.add_argument("repo_id", help="the model repo, user/name or organisation/name (created if needed)")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    args = parser.parse_args(argv)
    push(Path(args.run), args.repo_id, private=not args.public)
    return 0
