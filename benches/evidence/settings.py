"""The Agora settings of the bench's arms, from the command line and from a file.

- ``--agora KEY=VALUE``: a setting of the Agora arms (``agora-eda``, ``agora-nearest``, ``agora+NAME``).
- ``--variant NAME=KEY=VALUE[,KEY=VALUE]``: an extra arm ``agora+NAME`` (the exploration of Agora's
  settings, scored on E_sel).
- ``--best KEY=VALUE[,KEY=VALUE]``, else the file :data:`BEST_FILE`: the settings of arm ``agora-best``,
  the configuration the exploration chose (protocol v3). They are the whole of its settings: ``--agora``
  does not reach it, so the report's line is exactly what it ran with, over the shipped defaults.

A dotted key reaches into a nested section: ``select.by=disagreement``, ``select.random_fraction=0.5``;
the file may nest (``select: {by: disagreement}``) or use dotted keys. Values are read as YAML
(``0.5`` a number, ``null`` None, ``all`` a string).
"""

from __future__ import annotations

import json
from pathlib import Path

BEST_FILE = Path(__file__).resolve().parents[1] / "results" / "agora-best.yaml"


def parse(items, where: str) -> dict:
    """``KEY=VALUE`` items as a nested mapping (a dotted key opens a section)."""
    import yaml

    from agora.config.load import apply_overrides
    from agora.errors import RecipeError

    flat = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"{where} {item!r}: expected key=value, e.g. gamma=1 or select.by=disagreement")
        flat[key.strip()] = yaml.safe_load(value)
    try:
        return apply_overrides({}, flat)
    except RecipeError as err:
        raise SystemExit(f"{where}: {err}") from None


def merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, section by section (``select.by`` leaves ``select.rows`` alone)."""
    from agora.config.load import apply_overrides
    from agora.config.messages import flatten

    return apply_overrides(base, flatten(over))


def variants(items) -> dict[str, dict]:
    """``--variant NAME=key=value[,key=value]`` -> {``agora+NAME``: its settings}."""
    out = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip() or not rest:
            raise SystemExit(f"--variant {item!r}: expected NAME=key=value[,key=value]")
        out[f"agora+{name.strip()}"] = parse(rest.split(","), f"--variant {name.strip()}")
    return out


def best(text: str | None, path: Path = BEST_FILE) -> tuple[dict | None, str]:
    """agora-best's settings and where they come from: ``--best`` (``text``), else ``path`` if it exists,
    else (None, why): the exploration has not chosen yet."""
    import yaml

    if text:
        return check(parse(text.split(","), "--best"), "--best"), "--best"
    if not path.is_file():
        return None, f"no --best and no {path}"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data:
        raise SystemExit(f"{path}: expected a mapping of agora: settings (e.g. 'select: {{by: disagreement}}'), "
                         f"got {type(data).__name__}; write the settings the exploration chose")
    return check(merge({}, data), str(path)), str(path)


def check(settings: dict, where: str) -> dict:
    """The settings, validated as an ``agora:`` section (an error names the key and where it was given)."""
    from agora.config import validate_recipe
    from agora.errors import RecipeError

    agora = merge({"enabled": True}, settings)
    recipe = {"task": "sst2", "agora": agora, "teacher": {"path": "teacher"}, "data": {"unlabelled": "train"}}
    try:
        validate_recipe(recipe, source=where)
    except RecipeError as err:
        raise SystemExit(f"{err}\n  fix it in {where} (agora-best's settings: agora: keys)") from None
    return settings


def shown(settings: dict) -> str:
    """One line of settings, dotted keys in order: ``select.by=disagreement, select.rows=100``."""
    from agora.config.messages import flatten

    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in sorted(flatten(settings).items())) or "(none)"
