"""Build a leaderboard zip from finished runs (:mod:`agora.submission.check` checks any zip).

``build`` picks, for every file of the benchmark, the run that predicts it (``--run`` overrides
first, then the runs found under the given paths by task name), reads its saved test predictions
or, where they are missing or cover only part of the test split, predicts the whole split with
its exported model; writes the file exactly as the leaderboard wants it, checks it against the
test split, and only when every file passes writes the zip (to a temporary file in the output
folder, then renamed: never a partial zip). Every problem found is reported in one error.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from agora.files import atomic_write
from agora.errors import AgoraError
from agora.submission.assign import assign_runs
from agora.submission.render import check_text, render
from agora.submission.runs import Run, discover, predict, predict_key, saved_name
from agora.submission.spec import (
    RACE_METRICS_FILE,
    Expected,
    FileSpec,
    SubmissionError,
    load_expected,
    official,
    race_level,
    specs_for,
)

log = logging.getLogger(__name__)


@dataclass
class SubmissionReport:
    """What ``build`` wrote (or ``check`` read)."""

    benchmark: str
    out: Path | None
    files: dict[str, int] = field(default_factory=dict)
    """File name -> data rows."""
    runs: dict[str, Path] = field(default_factory=dict)
    """File name -> the run that predicted it."""
    predicted: list[str] = field(default_factory=list)
    """Files whose test split was predicted now, from the run's exported model."""
    missing: dict[str, str] = field(default_factory=dict)
    """File name -> why it is absent (only with ``allow_missing``)."""
    notes: list[str] = field(default_factory=list)
    metrics: dict | None = None
    """RACE: accuracy on RACE-M, RACE-H and all (the test answers are public)."""

    def summary(self) -> str:
        rows = [(name, str(n), str(self.runs.get(name, "")) + ("  (predicted now)" if name in self.predicted else ""))
                for name, n in self.files.items()]
        rows += [(name, "MISSING", why) for name, why in self.missing.items()]
        width = max([len(r[0]) for r in rows] + [4])
        lines = [f"{self.benchmark} submission: {self.out}"]
        lines += [f"  {name.ljust(width)}  {n.rjust(7)}  {where}" for name, n, where in rows]
        if self.metrics:
            acc = self.metrics["accuracy"]
            lines.append("  RACE accuracy: " + ", ".join(f"{k} {v * 100:.2f}" for k, v in acc.items()))
        return "\n".join(lines)


class SubmissionIncomplete(UserWarning):
    """``build(..., allow_missing=True)`` wrote a zip without some of the benchmark's files."""


def _fail(what: str, problems: list[str], notes: list[str] = ()) -> SubmissionError:
    """One error listing every problem, then the notes that may explain them."""
    lines = [f"  - {p}" for p in problems] + [f"  note: {n}" for n in notes]
    return SubmissionError(f"{what}: {len(problems)} problem(s):\n" + "\n".join(lines))


# -- choosing runs --------------------------------------------------------------------------------
def _expected(spec: FileSpec, data_dir: Path | None, source: str, notes: list[str]) -> Expected:
    """The test split from the data dir; without one, the official row count (and a note saying so)."""
    try:
        return load_expected(spec, data_dir, source)
    except (AgoraError, OSError, ValueError, KeyError) as err:
        why = ("no data dir (give --data-dir or set AGORA_DATA_DIR)" if data_dir is None
               else f"none readable under {data_dir}")
        notes.append(f"{spec.file}: only the official row count was checked; test file: {why} "
                     f"[{type(err).__name__}: {str(err).splitlines()[0][:200]}]")
        return official(spec, why)


def _data_dir(explicit: str | os.PathLike | None, run: Run | None) -> Path | None:
    from agora.paths import data_dir

    if explicit is not None:
        return Path(explicit).expanduser()
    return data_dir(run.data_setting("dir") if run is not None else None)


def _row_key(spec: FileSpec, row):
    """A prediction row's key in the test split (RACE: (id, question_idx)); None if it has none."""
    try:
        if spec.kind == "race":
            return str(row["id"]), int(row["question_idx"])
        return int(row["idx"])
    except (TypeError, KeyError, ValueError):
        return None


def _uncovered(spec: FileSpec, rows: list[dict], expected: Expected) -> int:
    """How many test rows have no prediction in ``rows`` (only the count is compared without a test file)."""
    if expected.keys is None:
        return max(0, expected.count - len(rows))
    return len(expected.keys - {_row_key(spec, row) for row in rows})


def _read_rows(path: Path, problems: list[str]) -> list[dict] | None:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            problems.append(f"{path} line {n}: not valid JSON ({err.msg})")
            return None
    return rows


# -- build ----------------------------------------------------------------------------------------
def build(
    benchmark: str,
    runs: list[str | os.PathLike] | tuple = (),
    out: str | os.PathLike | None = None,
    *,
    run_overrides: dict[str, str | os.PathLike] | None = None,
    allow_missing: bool = False,
    data_dir: str | os.PathLike | None = None,
    save_predictions: bool = True,
) -> SubmissionReport:
    """Write ``benchmark``'s leaderboard zip (``glue``, ``superglue`` or ``race``) from finished runs.

    Args:
        runs: run dirs, exported models, or folders holding them (searched recursively).
        out: the zip to write (default ``<benchmark>.zip``).
        run_overrides: ``{"MNLI": "runs/mnli-3"}``: this run predicts that task (or file: ``AX``),
            whatever else was found.
        allow_missing: write the files that exist and report the absent ones instead of failing.
        data_dir: the benchmark files (default: each run's ``data.dir``, else ``$AGORA_DATA_DIR``).
        save_predictions: save test predictions made now into the run's ``predictions/`` (never
            over a file the run wrote itself).

    Raises:
        SubmissionError: listing every problem at once; nothing is written then.

    Warns:
        SubmissionIncomplete: with ``allow_missing``, when files are absent from the zip.

    Example::

        report = build("glue", runs=["runs/"], out="glue.zip", run_overrides={"AX": "runs/mnli-2"})
        print(report.summary())
    """
    specs = specs_for(benchmark)
    bench = specs[0].benchmark
    out_path = Path(out if out is not None else f"{bench}.zip").expanduser()
    report = SubmissionReport(benchmark=bench, out=out_path)
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    found, problems = discover(list(runs))
    if not runs and not run_overrides:
        problems.append(f"no runs given: agora-finetune submit {bench} RUN_DIR... (or build({bench!r}, runs=[...]))")
    mismatched: list[str] = []
    assigned, missing = assign_runs(specs, found, {str(k): str(v) for k, v in (run_overrides or {}).items()},
                                problems, report.notes, mismatched)
    if mismatched:  # said first, before any file is read or predicted
        raise _fail(f"{bench}: --run names a run of another task", mismatched)
    rows, expected_of, to_predict = _saved_rows(specs, assigned, data_dir, problems, report)
    _predict_now(to_predict, data_dir, save_predictions, rows, problems, report)
    texts, race_expected = _render_all(specs, assigned, rows, expected_of, problems, report)
    _missing_files(specs, missing, allow_missing, problems, report)
    _write(specs, texts, race_expected, problems, report)
    if report.missing:
        warnings.warn(SubmissionIncomplete(
            f"INCOMPLETE {bench} submission {out_path}: {len(report.missing)} file(s) missing, the leaderboard "
            "needs every file: " + "; ".join(f"{file} ({why})" for file, why in report.missing.items())), stacklevel=2)
    return report


def _saved_rows(specs: list[FileSpec], assigned: dict[str, Run], data_dir, problems: list[str],
                report: SubmissionReport):
    """Per file, the run's saved predictions, or a key to predict with the run's export (also when the
    saved file is short): ``(rows, expected test split, {run path: (run, {key: file})})``."""
    rows: dict[str, tuple[list[dict], str]] = {}
    expected_of: dict[str, Expected] = {}
    to_predict: dict[Path, tuple[Run, dict[str, str]]] = {}  # run path -> (run, {key: file})
    for spec in specs:
        run = assigned.get(spec.file)
        if run is None:
            continue
        expected = _expected(spec, _data_dir(data_dir, run), run.data_setting("source") or "auto", report.notes)
        expected_of[spec.file] = expected
        path = run.predictions_file(spec)
        if path is not None:
            read = _read_rows(path, problems)
            if read is None:
                continue
            uncovered = _uncovered(spec, read, expected)
            if not uncovered or run.model_dir is None:
                rows[spec.file] = (read, str(path))
                continue
            report.notes.append(f"{spec.file}: {path} has no prediction for {uncovered} of the {expected.count} "
                                f"test rows; predicting the whole split with {run.model_dir} (that file is kept)")
        elif run.model_dir is None:
            problems.append(f"{spec.file}: run {run.path} has no saved predictions for it (predictions/"
                            f"{spec.split}.jsonl) and no exported model (best/) to predict with; rerun it with "
                            "output.predict: true and output.export: true, or pass another run")
            continue
        try:
            key = predict_key(run, spec)
        except AgoraError as err:
            problems.append(f"{spec.file}: {err}")
            continue
        to_predict.setdefault(run.path, (run, {}))[1][key] = spec.file
    return rows, expected_of, to_predict


def _predict_now(to_predict: dict[Path, tuple[Run, dict[str, str]]], data_dir, save_predictions: bool,
                 rows: dict[str, tuple[list[dict], str]], problems: list[str], report: SubmissionReport) -> None:
    """Predict with each run's export the files it is to predict (into ``rows``), and save them into
    the run's ``predictions/`` where ``save_predictions`` and no file of the run is there."""
    for run, keys in to_predict.values():
        log.info("predicting %s with %s", ", ".join(keys.values()), run.model_dir)
        try:
            predicted = predict(run, list(keys), Path(data_dir) if data_dir is not None else None)
        except Exception as err:  # report it with every other problem, not as a traceback
            problems.append(f"{', '.join(keys.values())}: predicting with {run.model_dir} failed: "
                            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        for key, file in keys.items():
            target = (run.predictions_dir or run.path / "predictions") / saved_name(key)
            rows[file] = (predicted[key], f"{target} (predicted now)")
            report.predicted.append(file)
            if save_predictions and (run.path / "config.yaml").is_file() and not target.exists():
                from agora.fit.rundir import write_predictions

                try:
                    write_predictions(target, predicted[key])
                    report.notes.append(f"{file}: predicted with {run.model_dir}; saved to {target}")
                except OSError as err:
                    report.notes.append(f"{file}: predicted with {run.model_dir}; not saved ({err})")


def _render_all(specs: list[FileSpec], assigned: dict[str, Run], rows: dict[str, tuple[list[dict], str]],
                expected_of: dict[str, Expected], problems: list[str],
                report: SubmissionReport) -> tuple[dict[str, str], Expected | None]:
    """Render and check every file against its test split: ``(file -> text, RACE's test split or None)``."""
    texts: dict[str, str] = {}
    race_expected: Expected | None = None
    for spec in specs:
        if spec.file not in rows:
            continue
        run = assigned[spec.file]
        expected = expected_of[spec.file]
        text, bad_rows = render(spec, rows[spec.file][0], rows[spec.file][1])
        made = len(rows[spec.file][0])
        short = made < expected.count and spec.file not in report.predicted
        # A short file, or rows that could not be written, explain the missing rows: say it once.
        problems += bad_rows + check_text(spec, text, expected,
                                          skip=frozenset({"count", "missing"}) if short or bad_rows else frozenset())
        if short:
            problems.append(
                f"{spec.file}: {rows[spec.file][1]} holds {made} predictions, but {expected.source} has "
                f"{expected.count} rows (was the run limited by data.max_predict_samples?) and the run has no exported "
                "model (best/) to predict the rest with; rerun it with data.max_predict_samples: null, or pass a run "
                "with best/")
        texts[spec.file] = text
        report.runs[spec.file] = run.path
        report.files[spec.file] = len(text.splitlines()) - (1 if spec.kind.startswith("tsv") else 0)
        if spec.kind == "race":
            race_expected = expected
    return texts, race_expected


def _missing_files(specs: list[FileSpec], missing: dict[str, str], allow_missing: bool, problems: list[str],
                   report: SubmissionReport) -> None:
    """Files no run predicts: reported with ``allow_missing``, else problems saying how to add them."""
    for file, why in missing.items():
        if allow_missing:
            report.missing[file] = why
        else:
            spec = next(s for s in specs if s.file == file)
            problems.append(f"{file}: missing ({why}); train a run with task: {spec.card} and pass its run dir, "
                            f"or name one with --run {spec.task_key.upper()}=DIR; --allow-missing writes the rest")


def _write(specs: list[FileSpec], texts: dict[str, str], race_expected: Expected | None, problems: list[str],
           report: SubmissionReport) -> None:
    """The zip (with RACE's metrics where its answers are public), only if there is no problem and some file."""
    bench, out_path = report.benchmark, report.out
    if problems:
        stale = f" (the {out_path} already there was left as it was)" if out_path.exists() else ""
        raise _fail(f"cannot build the {bench} submission {out_path}{stale}", problems, report.notes)
    if not texts:
        raise SubmissionError(f"cannot build the {bench} submission {out_path}: no run predicts any of its files "
                              f"({', '.join(s.file for s in specs)})")
    if race_expected is not None and race_expected.gold is not None:
        report.metrics = race_metrics(texts["RACE.jsonl"], race_expected)
        texts[RACE_METRICS_FILE] = json.dumps(report.metrics, indent=2) + "\n"
    write_zip(out_path, texts)


def race_metrics(text: str, expected: Expected) -> dict:
    """Accuracy on RACE-M, RACE-H and all, from the written RACE.jsonl and the public answers."""
    right = {"middle": 0, "high": 0}
    total = {"middle": 0, "high": 0}
    for line in text.splitlines():
        row = json.loads(line)
        key = (row["id"], row["question_idx"])
        level = race_level(row["id"])
        total[level] += 1
        right[level] += int(expected.gold.get(key) == row["label"])
    acc = {level: right[level] / total[level] if total[level] else 0.0 for level in total}
    acc["all"] = sum(right.values()) / max(1, sum(total.values()))
    return {"accuracy": {"middle": acc["middle"], "high": acc["high"], "all": acc["all"]},
            "questions": {**total, "all": sum(total.values())}, "source": expected.source}


def write_zip(out: Path, texts: dict[str, str]) -> None:
    """A flat zip, written to a temporary file beside ``out`` and renamed (atomic).

    Entries carry a fixed date and mode 0644, so the same predictions give the same bytes; the
    zip itself gets the usual permissions (:func:`agora.files.atomic_write`).
    """
    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in texts.items():
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                archive.writestr(info, text.encode("utf-8"))

    atomic_write(out, write)
