"""Task cards: one YAML per task in ``tasks/<benchmark>/``; data, not code.

A card says where the examples come from (the original file layout and the hub dataset), which
fields feed the model, the label names in order, the metrics and the split roles. Labels are
always mapped by *name*: the original files and the hub order label ids differently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from agora.errors import TaskError
from agora.files import DuplicateKeyError, read_yaml
from agora.paths import TASKS_DIR

FIELDS = ("idx", "text_a", "text_b", "label")


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalSplit(_Card):
    file: str
    header: bool | None = None
    columns: dict[str, str | int | None] | None = None
    """Our field -> column name (with a header) or position (without); null drops a field."""
    _labelled: bool = PrivateAttr(True)
    """Whether the split must carry labels (train and eval splits); set by the loader, not in cards. A
    reader requires every column the card names, except the label column of an unlabelled split."""


class LocalSource(_Card):
    reader: str = "tsv"
    """How the files are read: ``tsv`` (GLUE's layout), ``jsonl`` (one JSON object per line), ``csv``,
    ``json`` or ``parquet`` (a user's own files, through ``datasets``' packaged builders), or a
    benchmark's own reader (``wic``, ``wsc``, ``copa``, ``multirc``, ``record``, ``race``)."""
    dir: str
    """Directory under the data root (``glue/RTE``)."""
    header: bool = True
    columns: dict[str, str | int] = Field(default_factory=dict)
    encoding: str = "utf-8-sig"
    splits: dict[str, LocalSplit | str]
    options: dict[str, Any] = Field(default_factory=dict)
    """Reader settings (``race``: ``levels``, the level directories to read, in order)."""

    def split(self, name: str) -> LocalSplit:
        spec = self.splits[name]
        if isinstance(spec, str):
            spec = LocalSplit(file=spec)
        return LocalSplit(
            file=spec.file,
            header=self.header if spec.header is None else spec.header,
            columns={k: v for k, v in {**self.columns, **(spec.columns or {})}.items() if v is not None},
        )


class HubSource(_Card):
    path: str
    name: str | None = None
    splits: dict[str, str] = Field(default_factory=dict)
    """Our split name -> the hub's split name."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Our field -> the hub column."""
    label_names: dict[str, str] = Field(default_factory=dict)
    """Hub label name -> our label name, where they are spelled differently."""
    reader: str | None = None
    """A registered reader that turns hub examples into rows (WiC, WSC, COPA, MultiRC, ReCoRD,
    RACE); without it, ``columns`` are mapped one to one."""


class TaskCard(_Card):
    name: str
    benchmark: str
    description: str = ""
    format: Literal["classification", "regression", "multiple_choice", "grouped", "entity_cloze"]
    """See :mod:`agora.data.formats`: single/pair classification, regression, multiple choice (COPA,
    RACE), binary answers grouped by question (MultiRC), entity cloze (ReCoRD)."""
    labels: list[str] | None = None
    label_values: dict[str, str] = Field(default_factory=dict)
    """Raw value in the original files -> label name (``"1": equivalent``)."""
    metrics: list[str]
    main_metric: str
    train_split: str | None = "train"
    eval_splits: list[str] = Field(default_factory=list)
    test_splits: list[str] = Field(default_factory=list)
    extra_test_tasks: list[str] = Field(default_factory=list)
    """Test-only tasks predicted by this task's model (MNLI -> AX)."""
    predicted_by: str | None = None
    """For test-only tasks: the task whose model predicts this one."""
    choices: int | None = Field(None, ge=2)
    """Multiple choice: the number of options of every question (COPA 2, RACE 4)."""
    prediction_fields: list[str] = Field(default_factory=list)
    """Columns copied from the data into each prediction row (RACE: ``id``, ``question_idx``)."""
    local: LocalSource | None = None
    hub: HubSource | None = None
    submission: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> "TaskCard":
        if self.format in ("classification", "grouped", "entity_cloze") and not self.labels:
            raise ValueError(f"a {self.format} task needs 'labels' (names, in order)")
        repeated = sorted({name for name in self.labels or [] if (self.labels or []).count(name) > 1})
        if repeated:
            raise ValueError(f"label name(s) {repeated} appear more than once in 'labels': each label needs its "
                             "own name (spellings in the files go in label_values)")
        if self.format in ("grouped", "entity_cloze") and len(self.labels) != 2:
            raise ValueError(f"a {self.format} task is binary per row: 'labels' needs 2 names (no, yes)")
        if self.format == "multiple_choice":
            if self.choices is None:
                raise ValueError("a multiple_choice task needs 'choices' (options per question)")
            if self.labels is not None and len(self.labels) != self.choices:
                raise ValueError(f"'labels' names {len(self.labels)} options but 'choices' is {self.choices}")
        from agora.data.metrics import METRIC_NAMES

        unknown_metrics = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown_metrics:
            raise ValueError(f"unknown metric(s) {unknown_metrics} in 'metrics'; the metrics are {', '.join(METRIC_NAMES)}")
        if "f1" in self.metrics and self.format == "classification" and len(self.labels) > 2:
            raise ValueError(f"metric 'f1' is the F1 of label 1 and needs 2 labels, but 'labels' has {len(self.labels)}: "
                             "write macro_f1 (the mean F1 over every label)")
        if self.main_metric not in self.metrics:
            raise ValueError(f"main_metric '{self.main_metric}' is not one of metrics {self.metrics}")
        unknown = set(self.label_values.values()) - set(self.labels or [])
        if unknown:
            raise ValueError(f"label_values maps to names not in labels: {sorted(unknown)}")
        if self.local is None and self.hub is None:
            raise ValueError("a task needs a 'local' file layout, a 'hub' dataset, or both")
        return self

    # -- convenience -------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        if self.format == "multiple_choice":
            return self.choices  # type: ignore[return-value]
        return 1 if self.format == "regression" else len(self.labels or [])

    @property
    def select_split(self) -> str:
        """The split whose main metric picks the best checkpoint (the first eval split)."""
        return self.eval_splits[0]

    @property
    def splits(self) -> list[str]:
        first = [self.train_split] if self.train_split else []
        return first + self.eval_splits + self.test_splits

    def label_id(self, raw: str) -> int:
        """Map a raw label (a name, or a value of ``label_values``) to its id; KeyError if unknown."""
        name = self.label_values.get(raw, raw)
        return self.labels.index(name)  # type: ignore[union-attr]


def available_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TASKS_DIR.glob("*/*.yaml"))}


def load_task(name_or_path: str | os.PathLike) -> TaskCard:
    """Load a shipped card by name (``rte``, ``sst2``) or any card by path."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        # Card names are unique across benchmarks (glue "rte", superglue "superglue-rte");
        # "<benchmark>/<name>" also works: "glue/rte", "superglue/rte", "race/race-m".
        key = str(name_or_path).lower().replace("-", "").replace("_", "")
        shipped = {n.replace("-", "").replace("_", ""): p for n, p in available_tasks().items()}
        if "/" in key:
            bench, _, stem = key.partition("/")
            inside = {k: p for k, p in shipped.items() if p.parent.name == bench}
            key = next((k for k in (stem, bench + stem) if k in inside), key)
        if key not in shipped:
            raise TaskError(
                f"unknown task '{name_or_path}': not a file and not a shipped task card. "
                f"Shipped tasks: {', '.join(available_tasks())}. "
                "To use your own data, write a task card YAML and give its path."
            )
        path = shipped[key]
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
        card = TaskCard.model_validate(data)
    except DuplicateKeyError as err:
        raise TaskError(f"{path}, {err}") from None
    except yaml.YAMLError as err:
        raise TaskError(f"{path}: not valid YAML: {err}") from None
    except ValidationError as err:
        problems = "; ".join(
            (f"'{'.'.join(str(p) for p in e['loc'])}': " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise TaskError(f"{path}: invalid task card: {problems}") from None
    card.path = str(path)
    return card
