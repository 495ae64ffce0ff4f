"""The recipe's ``trainer:`` section checked against ``lightning.Trainer``'s own signature.

Every key must be an argument of ``lightning.Trainer.__init__`` and every value must have the type
its annotation gives (``max_epochs: int | None``, ``precision`` one of Lightning's spellings or
our ``auto``), so ``trainer.max_epochs=abc`` fails when the recipe enters, naming the key, what
Lightning expects and what it got, instead of a Lightning traceback after the data has loaded.
Values a recipe cannot hold (callbacks, loggers, strategies as objects) are checked by Lightning
itself when the run builds its Trainer, which is also before any work (:func:`agora.fit.run.run_fit`).
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from typing import Any

TRAINER_DOCS = "https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-flags"
OURS = {"precision": ("auto",)}
"""Values of ours that Lightning does not know (resolved before the Trainer is built)."""
AT_LEAST = {"accumulate_grad_batches": 1, "check_val_every_n_epoch": 1, "num_nodes": 1, "log_every_n_steps": 1,
            "reload_dataloaders_every_n_epochs": 0}
"""Integer settings Lightning divides by or counts with, and their smallest value (it does not check them itself)."""


class FieldProblems(ValueError):
    """Several problems of one section: ``(dotted key, the whole message)`` each;
    :func:`agora.config.messages.format_error` prints one line per problem."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


@functools.lru_cache(maxsize=1)
def trainer_hints() -> dict[str, Any]:
    """``lightning.Trainer.__init__``'s arguments and their annotations (``Any`` where unannotated)."""
    import inspect

    import lightning

    params = [p for p in inspect.signature(lightning.Trainer.__init__).parameters if p != "self"]
    try:
        hints = typing.get_type_hints(lightning.Trainer.__init__)
    except Exception:  # an annotation that does not resolve: names are still checked
        hints = {}
    return {name: hints.get(name, Any) for name in params}


@functools.lru_cache(maxsize=None)
def _adapter(name: str):
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(trainer_hints()[name], config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot check: Lightning checks it when the Trainer is built
        return None


def describe(hint: Any, extra: tuple = ()) -> str:
    """What a value of this annotation looks like, in words (``int | None`` -> "an integer or null");
    ``extra``: values of ours accepted beside it (``auto``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) or extra:
        args = args if origin in (typing.Union, types.UnionType) else (hint,)
        if float in args:
            args = tuple(a for a in args if a is not int)  # "a number" covers integers
        literals = [*extra, *(v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a))]
        parts = [describe(a) for a in args if typing.get_origin(a) is not typing.Literal]
        if literals:
            parts.insert(0, "one of " + ", ".join(repr(v) for v in literals))
        return " or ".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in args)
    if origin in (list, tuple):
        inner = describe(args[0]) if args else " or "
        return "a list" if " or " in inner else f"a list of {inner.removeprefix('an ').removeprefix('a ')}s"
    if origin is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    name = getattr(hint, "__name__", str(hint))
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name} object"


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, dict))


def check_trainer(section: dict[str, Any]) -> dict[str, Any]:
    """``section`` with every value checked against ``lightning.Trainer``'s annotations (lax: ``"3"``
    for an integer becomes 3); raises :class:`FieldProblems` listing every unknown key and every
    value of the wrong type."""
    from pydantic import ValidationError

    hints = trainer_hints()
    problems: list[tuple[str, str]] = []
    out = dict(section)
    for name, value in section.items():
        key = f"trainer.{name}"
        if name not in hints:
            close = difflib.get_close_matches(name, list(hints), n=1)
            hint = f" (did you mean 'trainer.{close[0]}'?)" if close else ""
            problems.append((key, f"unknown key '{key}'{hint}: not an argument of lightning.Trainer; see {TRAINER_DOCS}"))
            continue
        if value in OURS.get(name, ()):
            continue
        adapter = _adapter(name)
        if adapter is None:
            continue
        try:
            checked = adapter.validate_python(value)
        except ValidationError:
            expected = describe(hints[name], OURS.get(name, ()))
            problems.append((key, f"'{key}': lightning.Trainer expects {expected}, got {value!r}"))
            continue
        if name in AT_LEAST and isinstance(checked, int) and not isinstance(checked, bool) and checked < AT_LEAST[name]:
            problems.append((key, f"'{key}' must be at least {AT_LEAST[name]}, got {value!r}"))
            continue
        if _plain(checked) and _plain(value):
            out[name] = checked
    if problems:
        raise FieldProblems(problems)
    return out
