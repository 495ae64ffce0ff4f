"""The model card of every export: ``best/README.md`` in the Hub's format (``huggingface_hub.ModelCard``).

Its metadata is what the Hub reads: ``model-index`` (the task, the dataset, each dev metric and its value, as
the fractions of ``metrics.json``), ``base_model`` (when the student came from a Hub id), ``library_name``,
``pipeline_tag``, ``datasets`` and tags. Its text gives the task and its splits, the scores (dev, and E_sel
where it picked the model), the base model and the teacher, Agora's settings and generated rows, the
precision, the recipe as YAML and how to load the model with ``pipeline``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from agora.data.cards import TaskCard
from agora.files import atomic_write

CHOICE_FORMATS = ("multiple_choice",)


def is_hub_id(name: str | None) -> bool:
    """``name`` is a Hub repo id (``owner/name``), not a local folder or a ``pkg:`` model."""
    if not name or name.startswith("pkg:") or "/" not in name or Path(name).expanduser().exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def dev_scores(task: TaskCard, metrics: dict) -> list[tuple[str, str, float]]:
    """``(split, metric, value)`` of every official dev score in ``metrics.json``'s ``final``."""
    out = []
    for key, value in (metrics.get("final") or {}).items():
        split, _, metric = key.rpartition("/")
        if split in task.eval_splits and metric in task.metrics and isinstance(value, (int, float)) \
                and math.isfinite(value):
            out.append((split, metric, float(value)))
    return out


def card_data(recipe: dict, task: TaskCard, metrics: dict):
    """The card's metadata (``ModelCardData``)."""
    from huggingface_hub import EvalResult, ModelCardData

    pipeline_tag = "multiple-choice" if task.format in CHOICE_FORMATS else "text-classification"
    dataset = task.hub.path if task.hub is not None else task.name
    config = task.hub.name if task.hub is not None else None
    name = f"{Path(str(recipe['model']['name'])).name}-{task.name}"
    results = [EvalResult(task_type=pipeline_tag, dataset_type=dataset, dataset_name=f"{task.benchmark} {task.name}",
                          dataset_config=config, dataset_split=split, metric_type=metric, metric_value=value,
                          metric_name=f"{split} {metric}")
               for split, metric, value in dev_scores(task, metrics)]
    agora = bool((recipe.get("agora") or {}).get("enabled"))
    tags = ["agora-finetune", task.benchmark, task.name, "agora" if agora else "plain-fine-tuning"]
    if metrics.get("search"):
        tags.append("hyperparameter-search")
    base = recipe["model"]["name"]
    return ModelCardData(model_name=name, library_name="transformers", pipeline_tag=pipeline_tag,
                         base_model=base if is_hub_id(base) else None,
                         datasets=[dataset] if task.hub is not None else None, tags=tags, eval_results=results or None)


def _scores(task: TaskCard, metrics: dict) -> list[str]:
    lines = ["## Scores", "", "| split | metric | score |", "|---|---|---|"]
    lines += [f"| {split} (dev) | {metric} | {value:.4f} |" for split, metric, value in dev_scores(task, metrics)]
    final = metrics.get("final") or {}
    for key, value in final.items():
        split, _, metric = key.rpartition("/")
        if split == "e_sel" and metric in task.metrics and isinstance(value, (int, float)):
            lines.append(f"| E_sel (a held-out slice of train, which picked this model) | {metric} | {value:.4f} |")
    lines += ["", "Scores are fractions, as in the run's `metrics.json`; dev is the task's official dev set."]
    return lines


def _training(recipe: dict, metrics: dict) -> list[str]:
    precision = metrics.get("precision") or {}
    teacher = (recipe.get("teacher") or {}).get("path")
    agora = recipe.get("agora") or {}
    lines = ["## Training", "",
             f"- base model: `{recipe['model']['name']}`",
             f"- teacher: {f'`{teacher}`' if teacher and agora.get('enabled') else 'none'}",
             f"- precision: `{precision.get('value', recipe.get('trainer', {}).get('precision'))}`"
             + (f" ({precision['why']})" if precision.get("why") else ""),
             f"- epochs: {recipe.get('trainer', {}).get('max_epochs')}, seed {recipe.get('seed')}, "
             f"lr {recipe.get('optim', {}).get('lr')}, batch {recipe.get('data', {}).get('batch_size')}"]
    report, search = metrics.get("agora") or {}, metrics.get("search") or {}
    if agora.get("enabled"):
        generated = search.get("generated_rows", report.get("generated"))
        calls = search.get("teacher_calls", report.get("teacher_forward_calls"))
        lines += [f"- Agora: on; generated rows kept: {generated}; teacher forward passes: {calls}", "",
                  "Agora's settings:", "", "```yaml", yaml.safe_dump({"agora": agora}, sort_keys=False).strip(), "```"]
    else:
        lines.append("- Agora: off (plain fine-tuning)")
    if search:
        lines += ["", f"Picked by a search: {search.get('rounds')} round(s), {search.get('fits')} fits, ranked on "
                      f"{search.get('selection_metric')}; stopped: {search.get('stopped')}."]
    return lines


def _usage(task: TaskCard, ref: str) -> list[str]:
    if task.format in CHOICE_FORMATS:
        return ["## How to use", "", "```python", "from transformers import AutoModelForMultipleChoice, AutoTokenizer",
                "", f"model = AutoModelForMultipleChoice.from_pretrained({ref!r})",
                f"tokenizer = AutoTokenizer.from_pretrained({ref!r})",
                "# one (context, option) pair per option, shaped [1, options, tokens]; the argmax is the answer", "```"]
    regression = task.format == "regression"
    pair = task.local is not None and "text_b" in (task.local.columns or {}) or \
        task.hub is not None and "text_b" in task.hub.columns
    example = '{"text": "first sentence", "text_pair": "second sentence"}' if pair else '"a sentence"'
    extra = ', function_to_apply="none"' if regression else ""
    return ["## How to use", "", "```python", "from transformers import pipeline", "",
            f"model = pipeline(\"text-classification\", model={ref!r}{extra})",
            f"model({example})" + ("   # the score itself" if regression else
                                   f"   # a label of {task.labels}"), "```", "",
            "The tokenizer in this folder writes inputs (and pairs) the way the model was trained."]


def render(recipe: dict, task: TaskCard, metrics: dict, ref: str):
    """The card (``ModelCard``) of the export at ``ref`` (a folder or a Hub repo id)."""
    from huggingface_hub import ModelCard

    data = card_data(recipe, task, metrics)
    what = f"{task.benchmark} {task.name}" + (f": {task.description}" if task.description else "")
    body = [f"# {data.model_name}", "",
            f"`{recipe['model']['name']}` fine-tuned on {what} ({task.format}; labels {task.labels}) with "
            f"agora-finetune, {'Agora on' if (recipe.get('agora') or {}).get('enabled') else 'plain fine-tuning'}. "
            f"Trained on the `{task.train_split}` split, scored on {', '.join(task.eval_splits) or 'no dev split'}.",
            "", *_scores(task, metrics), "", *_training(recipe, metrics), "", *_usage(task, ref), "",
            "## Recipe", "", "The resolved recipe that made this model (`agora-finetune recipe.yaml` reruns it):", "",
            "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def write(best_dir: Path, recipe: dict, task: TaskCard, metrics: dict, ref: str | None = None) -> Path:
    """Write ``best_dir/README.md``; the usage example names ``ref`` (default: the folder itself)."""
    card = render(_saved(recipe), task, metrics, ref or str(best_dir))
    path = best_dir / "README.md"
    atomic_write(path, str(card))
    return path


def _saved(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as ``config.yaml`` keeps it: rerunning it never resumes or deletes by itself."""
    out = {**recipe, "output": {**(recipe.get("output") or {}), "resume_from": None, "overwrite": False}}
    if (out.get("trial") or {}).get("tracking"):
        out["trial"] = {k: v for k, v in out["trial"].items() if k != "tracking"}
    return out
