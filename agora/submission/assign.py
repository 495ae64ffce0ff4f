"""Which run makes which file of a submission: runs found under the given dirs, matched to the files by
task, and ``--run FILE=RUN`` overrides checked against the file's task (a run of another task is refused
before anything is read or predicted)."""

from __future__ import annotations

from pathlib import Path

from agora.errors import AgoraError
from agora.submission.runs import Run, open_run
from agora.submission.spec import FileSpec, norm


def other_task(run: Run, spec: FileSpec) -> str | None:
    """How a run named with ``--run`` differs from the task of the file it is to predict (its format or
    labels), or None where it can predict it (the same task, or one with the same labels: GLUE's RTE run
    for SuperGLUE's RTE)."""
    from agora.data.cards import load_task

    if run.key in spec.aliases:
        return None
    try:
        have, want = load_task(run.task), load_task(spec.card)
    except AgoraError:
        return None  # a task without a card: reading its predictions says what is wrong
    if have.format != want.format:
        return f"format {have.format}; {spec.card} is {want.format}"
    if [str(x).casefold() for x in have.labels or []] != [str(x).casefold() for x in want.labels or []]:
        return f"labels {have.labels}; {spec.card} has {want.labels}"
    return None


def assign_runs(specs: list[FileSpec], found: list[Run], overrides: dict[str, str], problems: list[str],
            notes: list[str], mismatched: list[str]) -> tuple[dict[str, Run], dict[str, str]]:
    """file -> run, and file -> why no run (missing); a ``--run`` of another task goes to ``mismatched``."""
    chosen: dict[str, tuple[int, Run, str]] = {}  # file -> (specificity, run, key)
    for key, path in overrides.items():
        matched = [s for s in specs if s.matches_key(key)]
        if not matched:
            problems.append(f"--run {key}={path}: '{key}' is not a task or file of this benchmark "
                            f"(files: {', '.join(s.stem for s in specs)})")
            continue
        run = open_run(Path(path).expanduser())
        if run is None:
            problems.append(f"--run {key}={path}: not a finished run dir (no metrics.json or best/config.json)")
            continue
        for spec in matched:
            specificity = 2 if norm(key) in (norm(spec.stem), *spec.extra) else 1
            if spec.file in chosen and chosen[spec.file][0] == specificity:
                problems.append(f"{spec.file}: both --run {chosen[spec.file][2]} and --run {key} choose its run")
                continue
            if spec.file not in chosen or chosen[spec.file][0] < specificity:
                chosen[spec.file] = (specificity, run, key)
    runs: dict[str, Run] = {}
    missing: dict[str, str] = {}
    for spec in specs:
        if spec.file in chosen:
            run = chosen[spec.file][1]
            other = other_task(run, spec)
            if other:
                mismatched.append(f"{spec.file}: --run {chosen[spec.file][2]}={run.path} is a run of task "
                                  f"'{run.task}' ({other}), not of {spec.card}: it cannot predict {spec.file}; "
                                  f"name a run of task {spec.card}")
                continue
            if run.key not in spec.aliases:
                notes.append(f"{spec.file}: using --run {chosen[spec.file][2]}={run.path} although that run's task is "
                             f"'{run.task}', not {spec.card}")
            runs[spec.file] = run
            continue
        candidates = [r for r in found if r.key in spec.aliases]
        if len(candidates) == 1:
            runs[spec.file] = candidates[0]
        elif not candidates:
            missing[spec.file] = f"no run of task {spec.card} found"
        else:
            listed = ", ".join(str(r.path) for r in candidates)
            problems.append(f"{spec.file}: {len(candidates)} runs of task {spec.task_key} ({listed}); "
                            f"choose one with --run {spec.task_key.upper()}=DIR")
    return runs, missing
