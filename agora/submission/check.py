"""Check any submission zip, ours or anyone's, against the benchmark's rules and its test splits."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from agora.submission.build import SubmissionReport, _expected, _fail
from agora.submission.render import check_text
from agora.submission.spec import RACE_METRICS_FILE, SubmissionError, guess_benchmark, norm, specs_for


def validate_zip(path: str | os.PathLike, benchmark: str | None = None,
                 data_dir: str | os.PathLike | None = None) -> tuple[SubmissionReport, list[str]]:
    """Check a submission zip made by anyone; return what it holds and every problem found."""
    from agora.paths import data_dir as default_data_dir

    path = Path(path).expanduser()
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise SubmissionError(f"{path}: not a readable zip file ({err})") from None
    with archive:
        entries = [i for i in archive.infolist()]
        names = [i.filename for i in entries if not i.is_dir()]
        bench = norm(benchmark) if benchmark else guess_benchmark(names)
        if bench is None:
            raise SubmissionError(f"{path}: none of its files ({', '.join(names) or 'empty zip'}) belongs to a "
                                  "GLUE, SuperGLUE or RACE submission; name the benchmark: "
                                  f"agora-finetune submit glue|superglue|race --check {path}")
        specs = {s.file: s for s in specs_for(bench)}
        report = SubmissionReport(benchmark=bench, out=path)
        problems: list[str] = []
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        for info in entries:
            if info.is_dir() or "/" in info.filename.strip("/"):
                problems.append(f"{info.filename}: the zip must be flat (files at the top, no folders)")
        by_base: dict[str, str] = {}
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if base in by_base:
                problems.append(f"{base}: appears twice in the zip ({by_base[base]}, {name})")
                continue
            by_base[base] = name
            if base not in specs and not (bench == "race" and base == RACE_METRICS_FILE):
                problems.append(f"{name}: unexpected file; a {bench} submission holds exactly "
                                f"{', '.join(specs)}")
        for file, spec in specs.items():
            if file not in by_base:
                problems.append(f"{file}: missing from the zip; add it (predicted by a {spec.card} model: "
                                f"agora-finetune submit {bench} RUNS... writes it from that run)")
                continue
            try:
                text = archive.read(by_base[file]).decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{file}: not UTF-8 text")
                continue
            expected = _expected(spec, root, "local", report.notes)
            problems += check_text(spec, text, expected)
            report.files[file] = max(0, len(text.splitlines()) - (1 if spec.kind.startswith("tsv") else 0))
    return report, problems


def check(path: str | os.PathLike, benchmark: str | None = None,
          data_dir: str | os.PathLike | None = None) -> SubmissionReport:
    """Like :func:`validate_zip`, but raises :class:`SubmissionError` listing every problem."""
    report, problems = validate_zip(path, benchmark, data_dir)
    if problems:
        raise _fail(f"{path} is not a valid {report.benchmark} submission", problems, report.notes)
    return report
