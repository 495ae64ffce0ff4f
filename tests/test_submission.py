"""Leaderboard submissions: GLUE, SuperGLUE and RACE zips built from real tiny runs (one per task, 1
epoch) on the real test files, test splits predicted from best/ where a run saved none or too few,
broken runs and broken zips fed to the builder and the validator.

Test files absent from ``../shared/data`` (MNLI, QQP, ReCoRD; QNLI train/dev) come from
``tests/fixtures/submission`` with the original schema; row counts are always those of the test
file in the data dir, never constants.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from agora import submission
from agora.submission import SubmissionError
from agora.submission.check import validate_zip
from agora.submission.spec import GLUE_ORDER
from conftest import tiny_recipe

FIXTURES = Path(__file__).parent / "fixtures" / "submission"
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
# Written vocabularies, from docs/submissions.md (independent of the task cards).
GLUE_VOCAB = {
    "CoLA.tsv": {"0", "1"}, "SST-2.tsv": {"0", "1"}, "MRPC.tsv": {"0", "1"}, "QQP.tsv": {"0", "1"},
    "WNLI.tsv": {"0", "1"}, "QNLI.tsv": {"entailment", "not_entailment"}, "RTE.tsv": {"entailment", "not_entailment"},
    "MNLI-m.tsv": {"entailment", "neutral", "contradiction"}, "MNLI-mm.tsv": {"entailment", "neutral", "contradiction"},
    "AX.tsv": {"entailment", "neutral", "contradiction"},
}
# file -> test file under the data dir, and its idx column
GLUE_TEST = {
    "CoLA.tsv": ("glue/CoLA/test.tsv", "index"), "SST-2.tsv": ("glue/SST-2/test.tsv", "index"),
    "MRPC.tsv": ("glue/MRPC/test.tsv", "index"), "STS-B.tsv": ("glue/STS-B/test.tsv", "index"),
    "QQP.tsv": ("glue/QQP/test.tsv", "id"), "MNLI-m.tsv": ("glue/MNLI/test_matched.tsv", "index"),
    "MNLI-mm.tsv": ("glue/MNLI/test_mismatched.tsv", "index"), "QNLI.tsv": ("glue/QNLI/test.tsv", "index"),
    "RTE.tsv": ("glue/RTE/test.tsv", "index"), "WNLI.tsv": ("glue/WNLI/test.tsv", "index"),
    "AX.tsv": ("glue/diagnostic/diagnostic.tsv", "index"),
}
SG_FILES = ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl",
            "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"]
SG_RTE_TASK = "superglue-rte"  # the SuperGLUE RTE card's name
SG_RTE_EXTRA = {"AX-b.jsonl": "axb", "AX-g.jsonl": "axg"}


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast_env(tmp_path_factory):
    """One torch thread (on 2 shared cores it is many times faster for a tiny model) and the same
    isolated, offline cache as conftest's per-test fixture, for the module-scoped runs below."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGORA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "agora-cache"))
        mp.delenv("AGORA_RUN_DIR", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, data_dir) -> Path:
    """The real data dir, plus the fixtures for the test files it lacks (MNLI, QQP, ReCoRD, QNLI train/dev)."""
    root = tmp_path_factory.mktemp("bench")
    for bench in ("glue", "superglue"):
        (root / bench).mkdir()
        for entry in sorted((data_dir / bench).iterdir()):
            (root / bench / entry.name).symlink_to(entry)
    for name in ("race", "tokenizers"):
        (root / name).symlink_to(data_dir / name)
    (root / "glue" / "QNLI").unlink()
    shutil.copytree(FIXTURES / "glue" / "QNLI", root / "glue" / "QNLI")
    (root / "glue" / "QNLI" / "test.tsv").symlink_to(data_dir / "glue" / "QNLI" / "test.tsv")
    for task in ("MNLI", "QQP"):
        (root / "glue" / task).symlink_to(FIXTURES / "glue" / task)
    (root / "superglue" / "ReCoRD").symlink_to(FIXTURES / "superglue" / "ReCoRD")
    return root


@pytest.fixture(scope="module")
def glue_runs(tmp_path_factory, fast_env, tiny_bort, bench_dir) -> Path:
    """One real tiny run per GLUE task (1 epoch, 64 training rows), full test predictions.

    QNLI saves no predictions (``output.predict: false``): submit predicts its test split from best/.
    """
    from agora import AgoraTrainer

    out = tmp_path_factory.mktemp("glue_runs")
    for task in GLUE_TASKS:
        recipe = tiny_recipe(
            tiny_bort, bench_dir, out / task, task=task,
            data={"max_train_samples": 64, "max_eval_samples": 64, "max_predict_samples": None, "eval_batch_size": 256},
            trainer={"max_epochs": 1},
            output={"predict": task != "qnli", "save_checkpoints": False},
        )
        AgoraTrainer.from_dict(recipe).fit()
    return out


@pytest.fixture(scope="module")
def glue_zip(glue_runs, bench_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("glue_zip") / "glue.zip"
    report = submission.build("glue", runs=[glue_runs], out=out)
    return out, report


def read_zip(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name).decode("utf-8") for name in archive.namelist()}


def write_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def tsv_idx(path: Path, column: str) -> list[int]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quotechar=None)
        header = next(rows)
        return [int(row[header.index(column)]) for row in rows if row and row != [""]]


def copy_run(src: Path, dst: Path, with_model: bool = False) -> Path:
    """A copy of a run dir (config, metrics, predictions; the export only if asked)."""
    dst.mkdir(parents=True)
    for name in ("config.yaml", "metrics.json"):
        shutil.copy(src / name, dst / name)
    if (src / "predictions").is_dir():
        shutil.copytree(src / "predictions", dst / "predictions")
    if with_model:
        shutil.copytree(src / "best", dst / "best")
    return dst


def rewrite_predictions(path: Path, fn) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in fn(rows)))


def saved_labels(path: Path) -> dict[int, object]:
    return {r["idx"]: r["label"] for r in map(json.loads, path.read_text().splitlines())}


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# -- GLUE: the complete zip from real runs ---------------------------------------------------------
def test_glue_zip_from_real_runs(glue_zip, glue_runs, bench_dir):
    out, report = glue_zip
    files = read_zip(out)
    assert list(files) == GLUE_ORDER  # flat, every file, leaderboard order
    for name, text in files.items():
        assert "\r" not in text and text.endswith("\n")
        lines = text.split("\n")[:-1]
        assert lines[0] == "index\tprediction", name
        test_file, column = GLUE_TEST[name]
        want = tsv_idx(bench_dir / test_file, column)
        rows = [line.split("\t") for line in lines[1:]]
        assert len(rows) == len(want), name
        assert sorted(int(i) for i, _ in rows) == sorted(want), name
        if name == "STS-B.tsv":
            assert all(re.fullmatch(r"\d\.\d{3}", v) and 0 <= float(v) <= 5 for _, v in rows)
        else:
            assert {v for _, v in rows} <= GLUE_VOCAB[name], name
    # Real files here: the official counts; fixtures: their own counts.
    assert report.files["CoLA.tsv"] == 1063 and report.files["QNLI.tsv"] == 5463 and report.files["AX.tsv"] == 1104
    assert report.files["MNLI-m.tsv"] == 40 and report.files["MNLI-mm.tsv"] == 44 and report.files["QQP.tsv"] == 50
    # AX comes from the MNLI run; QNLI was predicted now from its export and saved in its run.
    assert report.runs["AX.tsv"] == report.runs["MNLI-m.tsv"] == glue_runs / "mnli"
    ax = {r["idx"]: r["label"] for r in map(json.loads, (glue_runs / "mnli/predictions/ax-test.jsonl").open())}
    assert {int(i): v for i, v in (line.split("\t") for line in files["AX.tsv"].splitlines()[1:])} == ax
    assert report.predicted == ["QNLI.tsv"]
    assert (glue_runs / "qnli/predictions/test.jsonl").is_file()
    # Label names are mapped through the card's spelling: CoLA "acceptable" -> "1".
    cola = {r["idx"]: r["label"] for r in map(json.loads, (glue_runs / "cola/predictions/test.jsonl").open())}
    written = dict(line.split("\t") for line in files["CoLA.tsv"].splitlines()[1:])
    assert all(written[str(i)] == {"unacceptable": "0", "acceptable": "1"}[label] for i, label in cola.items())
    # Our own validator accepts it, against the same test files.
    assert submission.check(out, data_dir=bench_dir).files == report.files
    assert no_leftovers(out.parent) == []
    # The same runs give the same bytes; the zip is readable by others (not mkstemp's 0600).
    again = submission.build("glue", runs=[glue_runs], out=out.parent / "again.zip")
    assert again.predicted == [] and (out.parent / "again.zip").read_bytes() == out.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_prediction_from_the_export_matches_the_run(glue_runs, tmp_path, fast_env):
    from agora.submission.runs import open_run, predict

    copy = copy_run(glue_runs / "mnli", tmp_path / "mnli", with_model=True)
    shutil.rmtree(copy / "predictions")
    got = predict(open_run(copy), ["test_matched", "ax/test"], None)
    for key, saved in (("test_matched", "test_matched.jsonl"), ("ax/test", "ax-test.jsonl")):
        want = [json.loads(line) for line in (glue_runs / "mnli/predictions" / saved).open()]
        assert [r["idx"] for r in got[key]] == [r["idx"] for r in want]
        assert [r["label"] for r in got[key]] == [r["label"] for r in want]
        assert all(abs(a - b) < 1e-4 for g, w in zip(got[key], want) for a, b in zip(g["probs"], w["probs"]))


def test_run_overrides_win_and_ambiguity_is_an_error(glue_runs, tmp_path):
    others = tmp_path / "others"
    rte2 = copy_run(glue_runs / "rte", others / "rte-2")
    rewrite_predictions(rte2 / "predictions/test.jsonl", lambda rows: [{**r, "label": "entailment"} for r in rows])
    with pytest.raises(SubmissionError) as err:
        submission.build("glue", runs=[glue_runs, others], out=tmp_path / "glue.zip")
    assert "RTE.tsv: 2 runs of task rte" in str(err.value) and "--run RTE=DIR" in str(err.value)
    assert not (tmp_path / "glue.zip").exists()

    # --run RTE=... picks the run; --run AX=... (a file) beats --run MNLI=... (its task) for AX only.
    mnli2 = copy_run(glue_runs / "mnli", others / "mnli-2")
    rewrite_predictions(mnli2 / "predictions/ax-test.jsonl", lambda rows: [{**r, "label": "neutral"} for r in rows])
    report = submission.build("glue", runs=[glue_runs, others], out=tmp_path / "glue.zip",
                              run_overrides={"RTE": rte2, "MNLI": glue_runs / "mnli", "AX": mnli2})
    files = read_zip(tmp_path / "glue.zip")
    assert {line.split("\t")[1] for line in files["RTE.tsv"].splitlines()[1:]} == {"entailment"}
    assert {line.split("\t")[1] for line in files["AX.tsv"].splitlines()[1:]} == {"neutral"}
    assert report.runs["MNLI-m.tsv"] == glue_runs / "mnli" and report.runs["AX.tsv"] == mnli2


def test_missing_task_fails_whole_or_allow_missing_writes_the_rest(glue_runs, tmp_path, capsys):
    from agora.cli import main

    runs = [glue_runs / t for t in GLUE_TASKS if t != "wnli"]
    out = tmp_path / "glue.zip"
    with pytest.raises(SubmissionError) as err:
        submission.build("glue", runs=runs, out=out)
    assert "WNLI.tsv: missing (no run of task wnli found)" in str(err.value)
    assert not out.exists() and no_leftovers(tmp_path) == []

    assert main(["submit", "glue", *map(str, runs), "-o", str(out), "--allow-missing"]) == 0
    captured = capsys.readouterr()
    assert "INCOMPLETE: 1 file(s) missing" in captured.err and "WNLI.tsv: no run of task wnli found" in captured.err
    assert re.search(r"WNLI.tsv\s+MISSING", captured.out)  # in the summary table too
    names = set(read_zip(out))
    assert names == set(GLUE_ORDER) - {"WNLI.tsv"}
    # The Python API warns (a warning class of its own) and reports what is absent.
    out.unlink()
    with pytest.warns(submission.SubmissionIncomplete, match=r"INCOMPLETE glue submission .*WNLI.tsv"):
        report = submission.build("glue", runs=runs, out=out, allow_missing=True)
    assert report.missing == {"WNLI.tsv": "no run of task wnli found"} and set(read_zip(out)) == names
    # ... and the validator says what the zip lacks.
    with pytest.raises(SubmissionError, match="WNLI.tsv: missing from the zip"):
        submission.check(out)


def test_a_bare_export_predicts_what_it_is_named_for(glue_runs, bench_dir, tmp_path):
    """``--run AX=<an exported model>``: no run dir, no saved predictions; AX is predicted from it."""
    export = shutil.copytree(glue_runs / "mnli" / "best", tmp_path / "mnli-export")
    out = tmp_path / "glue.zip"
    report = submission.build("glue", runs=[glue_runs], out=out, run_overrides={"AX": export}, data_dir=bench_dir)
    assert report.runs["AX.tsv"] == export and "AX.tsv" in report.predicted
    written = {int(i): v for i, v in (line.split("\t") for line in read_zip(out)["AX.tsv"].splitlines()[1:])}
    assert written == saved_labels(glue_runs / "mnli/predictions/ax-test.jsonl")
    assert not (export / "predictions").exists()  # nothing is written into a bare export


def test_every_problem_is_listed_at_once(glue_runs, tmp_path):
    """A missing task, a short predictions file (no best/ to predict with), a wrong label name and a
    duplicated idx: one error naming all four, each once, and no zip (an older one is left alone)."""
    broken = tmp_path / "broken"
    cola = copy_run(glue_runs / "cola", broken / "cola")
    rewrite_predictions(cola / "predictions/test.jsonl", lambda rows: rows[:50])
    sst2 = copy_run(glue_runs / "sst2", broken / "sst2")
    rewrite_predictions(sst2 / "predictions/test.jsonl", lambda rows: [{**rows[0], "label": "Positive"}] + rows[1:])
    mrpc = copy_run(glue_runs / "mrpc", broken / "mrpc")
    rewrite_predictions(mrpc / "predictions/test.jsonl", lambda rows: rows + [rows[0]])
    runs = [glue_runs / t for t in GLUE_TASKS if t not in ("wnli", "cola", "sst2", "mrpc")] + [broken]
    out = tmp_path / "glue.zip"
    out.write_bytes(b"an older zip")
    with pytest.raises(SubmissionError) as err:
        submission.build("glue", runs=runs, out=out)
    message = str(err.value)
    assert message.startswith(f"cannot build the glue submission {out} (the {out} already there was left as it "
                              "was): 4 problem(s):"), message
    assert "WNLI.tsv: missing (no run of task wnli found); train a run with task: wnli" in message
    assert re.search(r"CoLA.tsv: \S+/cola/predictions/test.jsonl holds 50 predictions, but the test split "
                     r"glue/CoLA/test.tsv has 1063 rows .*data.max_predict_samples: null", message)
    assert re.search(r"sst2/predictions/test.jsonl line 1: label 'Positive' is not one of \['negative', 'positive'\]: "
                     "predictions must carry the task card's label names", message)
    first = json.loads((mrpc / "predictions/test.jsonl").read_text().splitlines()[0])["idx"]
    assert re.search(f"mrpc/predictions/test.jsonl line 1726: idx {first} appears again \\(first on line 1\\)", message)
    assert out.read_bytes() == b"an older zip" and no_leftovers(tmp_path) == []


# -- the validator, on zips made by anyone ---------------------------------------------------------
def test_validator_reports_every_broken_input(glue_zip, bench_dir, tmp_path, capsys):
    from agora.cli import main

    good, _ = glue_zip
    files = read_zip(good)
    assert main(["submit", "--check", str(good), "--data-dir", str(bench_dir)]) == 0
    assert "a valid glue submission (11 files" in capsys.readouterr().out

    def lines(name):
        return files[name].splitlines(keepends=True)

    rte = lines("RTE.tsv")
    duplicated = "".join(rte[:2] + [rte[1]] + rte[3:])  # idx of line 2 twice, the idx of line 3 gone
    mnli, sts = lines("MNLI-m.tsv"), lines("STS-B.tsv")
    cases = {
        "missing": ({k: v for k, v in files.items() if k != "WNLI.tsv"}, ["WNLI.tsv: missing from the zip"]),
        "duplicate": ({**files, "RTE.tsv": duplicated},
                      ["RTE.tsv line 3: idx 0 appears again (first on line 2)",
                       "RTE.tsv: 1 idx of the test split have no row (1)"]),
        "spelling": ({**files, "MNLI-m.tsv": "".join(mnli[:1] + [f"{mnli[1].split(chr(9))[0]}\tEntailment\n"] + mnli[2:])},
                     ["MNLI-m.tsv line 2: prediction 'Entailment' is not one of ['entailment', 'neutral', 'contradiction']"]),
        "short": ({**files, "QNLI.tsv": "".join(lines("QNLI.tsv")[:-10])},
                  ["QNLI.tsv: 5453 rows, but the test split glue/QNLI/test.tsv has 5463"]),
        "folder": ({f"glue/{k}": v for k, v in files.items()}, ["glue/CoLA.tsv: the zip must be flat"]),
        "header": ({**files, "CoLA.tsv": files["CoLA.tsv"].replace("index\tprediction", "id\tlabel")},
                   ["CoLA.tsv line 1: the first line must be the header"]),
        "crlf": ({**files, "WNLI.tsv": files["WNLI.tsv"].replace("\n", "\r\n")}, ["WNLI.tsv: has CR"]),
        "sts-range": ({**files, "STS-B.tsv": "".join(sts[:1] + [f"{sts[1].split(chr(9))[0]}\t7.000\n"] + sts[2:])},
                      ["STS-B.tsv line 2: prediction '7.000' is not a number in [0, 5]"]),
    }
    for case, (content, expected) in cases.items():
        path = write_zip(tmp_path / f"{case}.zip", content)
        _, problems = validate_zip(path, data_dir=bench_dir)
        text = "\n".join(problems)
        for fragment in expected:
            assert fragment in text, (case, fragment, text)

    # Without the test files, only the official row counts are checked, and the report says so.
    (tmp_path / "empty").mkdir()
    report, problems = validate_zip(good, data_dir=tmp_path / "empty")
    assert all(f"{name}: only the official row count was checked" in "\n".join(report.notes) for name in files)
    assert not [p for p in problems if p.startswith(("CoLA.tsv", "QNLI.tsv", "AX.tsv"))]
    assert any(p.startswith("MNLI-m.tsv: 40 rows, but the official test set has 9796 (no test file to compare with")
               for p in problems), problems  # the fixture's 40 rows

    # All four broken inputs in one zip: one error listing all of them.
    everything = {**cases["duplicate"][0], "MNLI-m.tsv": cases["spelling"][0]["MNLI-m.tsv"],
                  "QNLI.tsv": cases["short"][0]["QNLI.tsv"]}
    del everything["WNLI.tsv"]
    path = write_zip(tmp_path / "all.zip", everything)
    assert main(["submit", "--check", str(path), "--data-dir", str(bench_dir)]) == 2
    err = capsys.readouterr().err
    for fragment in ("WNLI.tsv: missing", "appears again", "'Entailment'", "5453 rows"):
        assert fragment in err


# -- SuperGLUE: the complete zip from real runs ------------------------------------------------------
def sg_test_rows(root: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (root / rel).read_text().splitlines() if line.strip()]


def fake_run(path: Path, task: str, predictions: dict[str, list[dict]]) -> Path:
    (path / "predictions").mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"task": task}))
    for stem, rows in predictions.items():
        (path / "predictions" / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Training files for the tasks whose full train set is not here: FewGLUE's 32 examples (ReCoRD: also
# its dev split; its test file is the fixture).
SG_TRAIN = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "wic": "WiC", "record": "ReCoRD"}


@pytest.fixture(scope="module")
def sg_runs(tmp_path_factory, fast_env, tiny_bort, bench_dir) -> Path:
    """One real tiny run per SuperGLUE task (1 epoch, 32 training rows).

    The SuperGLUE RTE run saves no test predictions (``output.predict: false``): submit predicts RTE,
    AX-b and AX-g from its best/. The WiC run saved only 64 of its 1400 test predictions: submit
    predicts the whole split from best/.
    """
    from agora import AgoraTrainer

    out = tmp_path_factory.mktemp("sg_runs")
    for task in ("boolq", "cb", "copa", "multirc", "record", SG_RTE_TASK, "wic", "wsc"):
        files = {}
        if task in SG_TRAIN:
            files["train"] = f"superglue/FewGLUE/{SG_TRAIN[task]}/train.jsonl"
        if task == "record":
            files["validation"] = files["train"]
        recipe = tiny_recipe(
            tiny_bort, bench_dir, out / task, task=task,
            data={"max_train_samples": 32, "max_eval_samples": 32, "eval_batch_size": 256, "files": files,
                  "max_predict_samples": 64 if task == "wic" else None},
            trainer={"max_epochs": 1},
            output={"predict": task != SG_RTE_TASK, "save_checkpoints": False},
        )
        AgoraTrainer.from_dict(recipe).fit()
    return out


@pytest.fixture(scope="module")
def sg_zip(sg_runs, bench_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sg_zip") / "superglue.zip"
    report = submission.build("superglue", runs=[sg_runs], out=out, data_dir=bench_dir)
    return out, report


def test_superglue_zip_from_real_runs(sg_zip, sg_runs, bench_dir):
    out, report = sg_zip
    files = read_zip(out)
    assert list(files) == SG_FILES  # flat, every file, leaderboard order
    tests = {"BoolQ.jsonl": "superglue/BoolQ/test.jsonl", "CB.jsonl": "superglue/CB/test.jsonl",
             "COPA.jsonl": "superglue/COPA/test.jsonl", "RTE.jsonl": "superglue/RTE/test.jsonl",
             "WiC.jsonl": "superglue/WiC/test.jsonl", "WSC.jsonl": "superglue/WSC/test.jsonl",
             "AX-b.jsonl": "superglue/AX-b/AX-b.jsonl", "AX-g.jsonl": "superglue/AX-g/AX-g.jsonl"}
    # Written vocabularies, from docs/submissions.md (independent of the task cards).
    vocab = {"BoolQ.jsonl": {"true", "false"}, "WiC.jsonl": {"true", "false"}, "WSC.jsonl": {"True", "False"},
             "CB.jsonl": {"entailment", "contradiction", "neutral"}, "RTE.jsonl": {"entailment", "not_entailment"},
             "AX-b.jsonl": {"entailment", "not_entailment"}, "AX-g.jsonl": {"entailment", "not_entailment"}}
    for name, text in files.items():
        assert "\r" not in text and text.endswith("\n")
        rows = [json.loads(line) for line in text.splitlines()]
        idx = [r["idx"] for r in rows]
        assert idx == sorted(idx) and all(type(i) is int for i in idx), name
        if name in tests:
            assert idx == sorted(int(r["idx"]) for r in sg_test_rows(bench_dir, tests[name])), name
            assert all(set(r) == {"idx", "label"} for r in rows), name
        if name in vocab:
            assert {r["label"] for r in rows} <= vocab[name] and all(type(r["label"]) is str for r in rows), name
    assert all(json.loads(line)["label"] in (0, 1) and type(json.loads(line)["label"]) is int
               for line in files["COPA.jsonl"].splitlines())
    assert report.files["BoolQ.jsonl"] == 3245 and report.files["WiC.jsonl"] == 1400
    assert report.files["AX-b.jsonl"] == 1104 and report.files["AX-g.jsonl"] == 356
    # Saved predictions are written with the leaderboard's spelling (WSC capitalised, BoolQ lower case).
    for name, task in (("WSC.jsonl", "wsc"), ("BoolQ.jsonl", "boolq"), ("CB.jsonl", "cb"), ("COPA.jsonl", "copa")):
        written = {r["idx"]: r["label"] for r in map(json.loads, files[name].splitlines())}
        assert written == saved_labels(sg_runs / task / "predictions/test.jsonl"), name
    # The RTE run saved no test predictions: RTE, AX-b and AX-g were predicted from its best/ (and saved);
    # WiC's saved file was short (64 rows): the whole split was predicted, the run's own file kept.
    assert sorted(report.predicted) == ["AX-b.jsonl", "AX-g.jsonl", "RTE.jsonl", "WiC.jsonl"]
    rte = sg_runs / SG_RTE_TASK
    assert report.runs["AX-b.jsonl"] == report.runs["AX-g.jsonl"] == report.runs["RTE.jsonl"] == rte
    for name, saved in (("RTE.jsonl", "test"), ("AX-b.jsonl", "axb-test"), ("AX-g.jsonl", "axg-test")):
        written = {r["idx"]: r["label"] for r in map(json.loads, files[name].splitlines())}
        assert written == saved_labels(rte / "predictions" / f"{saved}.jsonl"), name
    assert len((sg_runs / "wic/predictions/test.jsonl").read_text().splitlines()) == 64
    assert any("WiC.jsonl" in note and "predicting the whole split" in note for note in report.notes)
    # MultiRC: one line per paragraph, the test file's questions and answers nested, labels 0/1.
    test = {p["idx"]: p for p in sg_test_rows(bench_dir, "superglue/MultiRC/test.jsonl")}
    for line in files["MultiRC.jsonl"].splitlines():
        row = json.loads(line)
        assert set(row) == {"idx", "passage"}
        want = {q["idx"]: [a["idx"] for a in q["answers"]] for q in test[row["idx"]]["passage"]["questions"]}
        assert {q["idx"]: [a["idx"] for a in q["answers"]] for q in row["passage"]["questions"]} == want
        assert all(a["label"] in (0, 1) for q in row["passage"]["questions"] for a in q["answers"])
    assert len(files["MultiRC.jsonl"].splitlines()) == len(test) == 166
    # ReCoRD (fixture): one row per query, the text of an entity of its passage.
    entities = {}
    for passage in sg_test_rows(bench_dir, "superglue/ReCoRD/test.jsonl"):
        text = passage["passage"]["text"]
        for q in passage["qas"]:
            entities[q["idx"]] = {text[e["start"]: e["end"] + 1] for e in passage["passage"]["entities"]}
    record = [json.loads(line) for line in files["ReCoRD.jsonl"].splitlines()]
    assert [r["idx"] for r in record] == sorted(entities) and all(r["label"] in entities[r["idx"]] for r in record)
    assert submission.check(out, data_dir=bench_dir).files == report.files
    assert no_leftovers(out.parent) == []


def test_superglue_and_race_rules_agree_with_the_task_cards():
    """SuperGLUE's and RACE's rules come from the task cards (one place per task)."""
    from agora.submission.spec import specs_for
    from agora.data.cards import available_tasks, load_task

    kinds = {"name": "label", "index": "choice", "nested": "multirc", "entity": "record", "letter": "race"}
    for bench in ("superglue", "race"):
        cards = {}
        for name in available_tasks():
            card = load_task(name)
            entry = card.submission.get(bench)
            if entry:
                assert entry["file"] not in cards, f"two cards claim {entry['file']}"
                cards[entry["file"]] = (card, entry)
        specs = specs_for(bench)
        assert sorted(cards) == sorted(s.file for s in specs)
        for spec in specs:
            card, entry = cards[spec.file]
            assert (card.predicted_by or card.name) == spec.card, spec.file
            assert f"{card.local.dir}/{card.local.split(entry['split']).file}" == spec.test_path, spec.file
            assert kinds[entry.get("write")] == spec.kind, spec.file
            if spec.kind in ("label", "race"):
                assert sorted(card.labels) == sorted(spec.allowed), spec.file
                assert list(entry.get("vocabulary") or card.labels) == list(spec.allowed), spec.file


def test_superglue_validator_and_build_problems(sg_zip, sg_runs, glue_runs, bench_dir, tmp_path):
    files = read_zip(sg_zip[0])

    def edit(name, fn):
        rows = [json.loads(line) for line in files[name].splitlines()]
        return "".join(json.dumps(r) + "\n" for r in fn(rows))

    def drop_answer(rows):
        rows[0]["passage"]["questions"][0]["answers"].pop()
        return rows

    broken = {
        **files,
        "COPA.jsonl": edit("COPA.jsonl", lambda rows: [{**rows[0], "label": "1"}] + rows[1:]),
        "BoolQ.jsonl": edit("BoolQ.jsonl", lambda rows: [{**rows[0], "label": "True"}] + rows[1:]),
        "WSC.jsonl": edit("WSC.jsonl", lambda rows: rows[::-1]),
        "MultiRC.jsonl": edit("MultiRC.jsonl", drop_answer),
        "ReCoRD.jsonl": edit("ReCoRD.jsonl", lambda rows: [{**rows[0], "label": "Nobody"}] + rows[1:]),
        "CB.jsonl": edit("CB.jsonl", lambda rows: rows[:-1]),
    }
    del broken["AX-g.jsonl"]
    _, problems = validate_zip(write_zip(tmp_path / "broken.zip", broken), data_dir=bench_dir)
    text = "\n".join(problems)
    for fragment in ("COPA.jsonl line 1: label '1' must be the integer 0 or 1",
                     "BoolQ.jsonl line 1: label 'True' is not one of ['true', 'false']",
                     "WSC.jsonl line 2: rows must be sorted by idx",
                     "MultiRC.jsonl line 1: question 0: answers",
                     "ReCoRD.jsonl line 1: label 'Nobody' is not an entity of the passage of query 0",
                     "CB.jsonl: 249 rows, but the test file superglue/CB/test.jsonl has 250",
                     "AX-g.jsonl: missing from the zip"):
        assert fragment in text, (fragment, text)

    # Building: a GLUE RTE run is not the SuperGLUE RTE run; without one, RTE, AX-b, AX-g are missing.
    runs = [p for p in sg_runs.iterdir() if p.name != SG_RTE_TASK]
    with pytest.raises(SubmissionError) as err:
        submission.build("superglue", runs=[*runs, glue_runs / "rte"], out=tmp_path / "sg.zip", data_dir=bench_dir)
    for name in ("RTE.jsonl", "AX-b.jsonl", "AX-g.jsonl"):
        assert f"{name}: missing (no run of task superglue-rte found)" in str(err.value)
    # A GLUE RTE run named with --run RTE=DIR: used for RTE.jsonl with a note, but it cannot predict AX-b or AX-g.
    with pytest.raises(SubmissionError) as err:
        submission.build("superglue", runs=runs, out=tmp_path / "sg.zip", data_dir=bench_dir,
                         run_overrides={"RTE": glue_runs / "rte"})
    message = str(err.value)
    assert "2 problem(s)" in message and "RTE.jsonl" not in message.split("note:")[0]
    for name in ("AX-b.jsonl", "AX-g.jsonl"):
        assert f"{name}: run {glue_runs / 'rte'} (task rte) does not predict {name}" in message
    assert f"note: RTE.jsonl: using --run RTE={glue_runs / 'rte'} although that run's task is 'rte', not superglue-rte" \
        in message
    # ... a SuperGLUE RTE run named with --run RTE=DIR predicts all three files.
    report = submission.build("superglue", runs=runs, out=tmp_path / "sg.zip", data_dir=bench_dir,
                              run_overrides={"RTE": sg_runs / SG_RTE_TASK})
    assert report.runs["AX-g.jsonl"] == sg_runs / SG_RTE_TASK


# -- RACE -------------------------------------------------------------------------------------------
def race_gold(root: Path) -> dict[tuple[str, int], str]:
    gold = {}
    for path in sorted((root / "race/test").glob("*/*.txt")):
        article = json.loads(path.read_text())
        for q, answer in enumerate(article["answers"]):
            gold[(article["id"], q)] = answer
    return gold


def test_race_predictions_and_accuracy(bench_dir, tmp_path):
    gold = race_gold(bench_dir)
    # Right on every RACE-M question, always "A" on RACE-H.
    rows = [{"idx": i, "id": a, "question_idx": q, "label": answer if a.startswith("middle") else "A"}
            for i, ((a, q), answer) in enumerate(sorted(gold.items()))]
    run = fake_run(tmp_path / "runs" / "race", "race", {"test": rows})
    out = tmp_path / "race.zip"
    report = submission.build("race", runs=[run.parent], out=out, data_dir=bench_dir)
    files = read_zip(out)
    assert list(files) == ["RACE.jsonl", "RACE-metrics.json"]
    written = [json.loads(line) for line in files["RACE.jsonl"].splitlines()]
    assert len(written) == len(gold) == 4934 and all(set(r) == {"id", "question_idx", "label"} for r in written)
    high = [k for k in gold if k[0].startswith("high")]
    metrics = json.loads(files["RACE-metrics.json"])
    assert metrics["accuracy"]["middle"] == 1.0
    assert metrics["accuracy"]["high"] == pytest.approx(sum(gold[k] == "A" for k in high) / len(high))
    assert metrics["questions"] == {"middle": 1436, "high": 3498, "all": 4934} and report.metrics == metrics
    assert submission.check(out, data_dir=bench_dir).files["RACE.jsonl"] == 4934


def test_race_from_a_real_run(fast_env, tiny_bort, bench_dir, tmp_path):
    """A tiny RACE run scored only 32 test questions (data.max_eval_samples): submit predicts all 4934."""
    from agora import AgoraTrainer

    recipe = tiny_recipe(tiny_bort, bench_dir, tmp_path / "runs" / "race", task="race",
                         data={"max_train_samples": 32, "max_eval_samples": 32, "eval_batch_size": 256},
                         trainer={"max_epochs": 1}, output={"save_checkpoints": False})
    AgoraTrainer.from_dict(recipe).fit()
    assert len((tmp_path / "runs/race/predictions/test.jsonl").read_text().splitlines()) == 32
    out = tmp_path / "race.zip"
    report = submission.build("race", runs=[tmp_path / "runs"], out=out, data_dir=bench_dir)
    assert report.predicted == ["RACE.jsonl"] and report.files == {"RACE.jsonl": 4934}
    files = read_zip(out)
    written = [json.loads(line) for line in files["RACE.jsonl"].splitlines()]
    gold = race_gold(bench_dir)
    assert sorted((r["id"], r["question_idx"]) for r in written) == sorted(gold)
    assert {r["label"] for r in written} <= {"A", "B", "C", "D"}
    right = [r["label"] == gold[(r["id"], r["question_idx"])] for r in written]
    assert json.loads(files["RACE-metrics.json"])["accuracy"]["all"] == pytest.approx(sum(right) / len(right))

    # The validator on broken RACE files: a question twice, a label out of A-D, a short file.
    lines = files["RACE.jsonl"].splitlines(keepends=True)
    bad = json.loads(lines[1])
    broken = "".join([lines[0], lines[0], json.dumps({**bad, "label": "E"}) + "\n"] + lines[2:-5])
    _, problems = validate_zip(write_zip(tmp_path / "broken.zip", {"RACE.jsonl": broken}), data_dir=bench_dir)
    text = "\n".join(problems)
    first = json.loads(lines[0])
    for fragment in (f"RACE.jsonl line 2: idx {first['id']}/{first['question_idx']} appears again",
                     "RACE.jsonl line 3: label 'E' is not one of ['A', 'B', 'C', 'D']",
                     "RACE.jsonl: 4930 rows, but the RACE test split race/test has 4934",
                     "RACE.jsonl: 5 idx of the test split have no row"):
        assert fragment in text, (fragment, text)


def test_cli_usage_errors(tmp_path, capsys):
    from agora.cli import main

    assert main(["submit", "gleu", str(tmp_path), "-o", str(tmp_path / "x.zip")]) == 2
    assert "unknown benchmark 'gleu'" in capsys.readouterr().err
    (tmp_path / "other.zip").write_bytes(b"not a zip")
    assert main(["submit", "--check", str(tmp_path / "other.zip")]) == 2
    assert "not a readable zip file" in capsys.readouterr().err
    assert main(["submit", "glue", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert "nowhere: no such directory" in err and "CoLA.tsv: missing" in err
    assert main(["submit", "superglue", "-o", str(tmp_path / "x.zip")]) == 2
    assert "no runs given: agora-finetune submit superglue RUN_DIR..." in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_a_wrong_or_missing_glue_header_is_one_problem_and_no_false_row_count(data_dir, capsys):
    """RTE.tsv with ``id<TAB>label`` as its header: one problem naming the header expected (was two
    contradictory header messages and "3001 rows, but ... 3000"); with no header at all, one problem too."""
    from agora.submission.build import _expected
    from agora.submission.render import check_text
    from agora.submission.spec import specs_for

    spec = next(s for s in specs_for("glue") if s.file == "RTE.tsv")
    expected = _expected(spec, data_dir, "local", [])
    rows = "".join(f"{i}\tentailment\n" for i in tsv_idx(data_dir / "glue" / "RTE" / "test.tsv", "index"))
    assert check_text(spec, "index\tprediction\n" + rows, expected) == []
    assert check_text(spec, "id\tlabel\n" + rows, expected) == [
        "RTE.tsv line 1: the first line must be the header 'index<TAB>prediction', got 'id\\tlabel'; replace it"]
    assert check_text(spec, rows, expected) == [
        "RTE.tsv line 1: the header 'index<TAB>prediction' is missing: the first line is a row ('0\\tentailment'); "
        "add the header above it"]
    assert check_text(spec, "", expected)[0] == "RTE.tsv line 1: empty file; the first line must be the header 'index<TAB>prediction'"
