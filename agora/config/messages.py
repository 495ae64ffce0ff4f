"""What a user reads when a recipe is invalid: one line per problem, naming the dotted key, what was
expected, what was given, and where the value came from (the recipe file, or an override such as
``optim.lr=abc`` on the command line)."""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from agora.config.schema import RunConfig
from agora.config.trainer_flags import FieldProblems

DOCS = "the 'Recipes' table of README.md and agora/config/schema.py describe every key"


def flatten(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Overrides as dotted keys (``trainer__max_epochs`` and ``{"data": {"batch_size": 4}}`` too)."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        dotted = key.replace("__", ".")
        if isinstance(value, dict) and value:
            out.update({f"{dotted}.{k}": v for k, v in flatten(value).items()})
        else:
            out[dotted] = value
    return out


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _override_of(key: str, overrides: dict[str, Any]) -> str | None:
    """The override that set ``key`` (or a section holding it, or a key inside it), as typed."""
    for name, value in overrides.items():
        if key == name or key.startswith(name + ".") or (key and name.startswith(key + ".")):
            return f"{name}={_shown(value)}"
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def section_keys(loc: tuple) -> tuple[str, list[str]] | None:
    """The section holding the last key of ``loc`` and the keys it takes; None outside the schema."""
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return None
    return (".".join(str(p) for p in loc[:-1]) or "a recipe"), list(model.model_fields)


def _unknown(loc: tuple) -> str:
    key = ".".join(str(p) for p in loc)
    found = section_keys(loc)
    if found is None:
        return f"unknown key '{key}' ({DOCS})"
    section, keys = found
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    prefix = "" if section == "a recipe" else section + "."
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; {section} takes: {', '.join(keys)}"


def _problems(item: dict) -> list[tuple[str, str]]:
    """``(dotted key, message)`` of one pydantic error (several for a section's own check)."""
    loc = tuple(item["loc"])
    key = ".".join(str(p) for p in loc)
    error = (item.get("ctx") or {}).get("error")
    if isinstance(error, FieldProblems):
        return list(error.problems)
    if item["type"] == "extra_forbidden":
        return [(key, _unknown(loc))]
    if item["type"] == "missing":
        return [(key, f"missing required key '{key}'")]
    msg = item["msg"].removeprefix("Value error, ")
    if item["type"] == "value_error":  # a check of ours: its message says what is wrong and how to fix it
        return [(key, f"'{key}': {msg}" if key else msg)]
    got = item.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return [(key, f"'{key}': {msg}{shown}")]


def format_error(source: str, err: ValidationError, overrides: dict[str, Any] | None = None) -> str:
    """The message of a :class:`~agora.errors.RecipeError` for a recipe that failed validation: one
    line per problem; a problem an override caused names the override, not the file."""
    flat = flatten(overrides)
    lines, blamed = [], 0
    for item in err.errors():
        for key, message in _problems(item):
            override = _override_of(key, flat)
            if override is not None:
                blamed += 1
                message += f" (from the override {override}, not from {source})"
            lines.append(f"  - {message}")
    if blamed and blamed == len(lines):
        head = f"invalid override{'s' if blamed > 1 else ''} of recipe {source}"
    else:
        head = f"{source}: invalid recipe"
    return "\n".join([head, *lines])
