"""``agora-finetune`` ends every failure in one line, never a raw traceback: our errors exit 2, a full
disk says whether the run can be resumed (and a checkpoint or export is never left half written under its
name), anything unexpected exits 1 with its traceback in a ``logs/error.log``. Also the known cases of the
issue's tour: a run dir given as ``teacher.path``, a truncated teacher, ``submit --run`` with a run of
another task."""

import errno
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe

from agora.cli import main
from agora.errors import ModelError
from agora.method.teacher import Teacher


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def _write(tmp_path, recipe) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _recipe(tiny_bort, data_dir, out, **sections):
    return tiny_recipe(tiny_bort, data_dir, out, **{"trainer": {"max_epochs": 1}, "output": {"predict": False},
                                                    **sections})


def _said(capsys) -> str:
    """The one line agora-finetune wrote to stderr (Lightning's INFO lines aside); no traceback."""
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("agora-finetune")]
    raw, inside = [], False  # logging's own errors (a handler on a stream pytest closed) run to "Arguments:"
    for i, line in enumerate(err.splitlines()):
        inside = (inside or line == "--- Logging error ---") and not line.startswith("Arguments:")
        if line.startswith("Traceback") and not inside:
            raw.append(i)
    assert len(ours) == 1 and not raw, err[-3000:]
    return ours[0]


def _full_disk_on(monkeypatch, call: int):
    """``torch.save`` into a file fails with ENOSPC on its ``call``-th use, after writing part of it."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (io.BytesIO, str, Path)):
            calls.append(f)
            if len(calls) == call:
                f.write(b"PK\x03\x04 partial checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_whole_and_the_run_resumable(
        tmp_path, data_dir, tiny_bort, monkeypatch, capsys):
    run = tmp_path / "run"
    path = _write(tmp_path, _recipe(tiny_bort, data_dir, run, trainer={"max_epochs": 2}))
    _full_disk_on(monkeypatch, 3)  # epoch 0 wrote best-epoch0.ckpt and last.ckpt; epoch 1's first save fails
    assert main([path]) == 1
    err = _said(capsys)
    assert err == (f"agora-finetune: error: no space left on the disk (No space left on device); nothing partly written "
                   f"was kept under its name; free some space, then continue it from {run / 'checkpoints' / 'last.ckpt'} "
                   f"with the same command and output.dir={run} output.resume_from=last")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-epoch0.ckpt", "last.ckpt"]  # no .tmp left
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    monkeypatch.undo()
    assert main([path, "output.resume_from=last"]) == 0
    assert [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["epochs"]] == [0, 1]


def test_a_full_disk_during_the_export_leaves_no_half_export(tmp_path, data_dir, tiny_bort, monkeypatch, capsys):
    import transformers.modeling_utils as mu

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 64)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    run = tmp_path / "run"
    path = _write(tmp_path, _recipe(tiny_bort, data_dir, run))
    monkeypatch.setattr(mu, "safe_save_file", full)
    assert main([path]) == 1
    err = _said(capsys)
    assert err.startswith("agora-finetune: error: no space left on the disk (No space left on device: ")
    assert err.endswith(f"free some space, then continue it from {run / 'checkpoints' / 'last.ckpt'} with the same "
                        f"command and output.dir={run} output.resume_from=last")
    assert not (run / "best").exists() and not list(run.glob(".best.*")) and not (run / "metrics.json").exists()
    monkeypatch.undo()
    assert main([path, "output.resume_from=last"]) == 0  # the export is written from the finished fit
    assert (run / "best" / "model.safetensors").is_file() and (run / "metrics.json").is_file()

    # without a last.ckpt the advice does not promise a resume
    run2 = tmp_path / "run2"
    path = _write(tmp_path, _recipe(tiny_bort, data_dir, run2, output={"predict": False, "save_checkpoints": False}))
    monkeypatch.setattr(mu, "safe_save_file", full)
    assert main([path]) == 1
    assert _said(capsys).endswith(
        f"free some space, then run it again with output.overwrite=true (nothing in {run2} to resume from)")


def test_an_unexpected_error_is_one_line_with_its_traceback_in_the_run_dir(tmp_path, data_dir, tiny_bort, monkeypatch,
                                                                          capsys):
    import agora.fit.rundir as rundir

    def broken(run_dir, metrics):
        return 1 / 0

    run = tmp_path / "run"
    monkeypatch.setattr(rundir, "write_metrics", broken)
    assert main([_write(tmp_path, _recipe(tiny_bort, data_dir, run))]) == 1
    err = _said(capsys)
    log = run / "logs" / "error.log"
    assert err == (f"agora-finetune: unexpected error: ZeroDivisionError: division by zero (run dir {run}; full "
                   f"traceback in {log}). Please report it, with that file")
    text = log.read_text()
    assert text.startswith("Traceback (most recent call last)") and "in broken" in text and "ZeroDivisionError" in text


def test_an_unexpected_error_before_the_run_dir_and_an_interrupt(tmp_path, data_dir, tiny_bort, monkeypatch, capsys):
    import agora.fit.model as model

    def broken(*args, **kwargs):
        raise KeyError("head")

    run = tmp_path / "run"
    monkeypatch.setattr(model, "build_model", broken)
    assert main([_write(tmp_path, _recipe(tiny_bort, data_dir, run))]) == 1
    err = _said(capsys)
    assert err.startswith("agora-finetune: unexpected error: KeyError: 'head' (no run dir was left; full traceback in ")
    log = Path(err.split("full traceback in ")[1].split(")")[0])
    assert not run.exists() and "raise KeyError" in log.read_text()
    log.unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "build_model", interrupted)
    assert main([_write(tmp_path, _recipe(tiny_bort, data_dir, run))]) == 130
    assert _said(capsys) == "agora-finetune: interrupted"


def test_a_run_dir_as_teacher_path_suggests_its_best(tmp_path, tiny_teacher):
    shutil.copytree(tiny_teacher, tmp_path / "teacher-run" / "best")
    (tmp_path / "teacher-run" / "metrics.json").write_text("{}")
    run = tmp_path / "teacher-run"
    with pytest.raises(ModelError, match=rf"^teacher.path '{run}' is a run dir, not a model: its exported model is "
                                         rf"{run / 'best'}; write teacher.path: {run / 'best'}$"):
        Teacher(str(run), ["entailment", "not_entailment"])


def test_a_truncated_teacher_is_named_as_the_teacher(tmp_path, tiny_teacher, data_dir, tiny_bort, capsys):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    recipe = _recipe(tiny_bort, data_dir, tmp_path / "run", agora={"enabled": True}, teacher={"path": str(teacher)})
    assert main([_write(tmp_path, recipe)]) == 2
    err = _said(capsys)
    assert err.startswith(f"agora-finetune: error: teacher.path '{teacher}': the teacher's weights file {weights} is "
                          "incomplete or corrupt (SafetensorError: ")
    assert "It is the teacher that is broken, not the student" in err
    assert not (tmp_path / "run").exists()


def test_submit_with_a_run_of_another_task_says_so_before_predicting(tmp_path, tiny_bort, monkeypatch, capsys):
    import importlib

    build = importlib.import_module("agora.submission.build")  # the module, not the function agora.submission exports

    mrpc = tmp_path / "mrpc-run"
    shutil.copytree(tiny_bort, mrpc / "best")
    config = json.loads((mrpc / "best" / "config.json").read_text())
    (mrpc / "best" / "config.json").write_text(json.dumps({**config, "agora": {"task": "mrpc"}}))
    (mrpc / "metrics.json").write_text(json.dumps({"task": "mrpc"}))
    monkeypatch.setattr(build, "predict", lambda *a, **k: pytest.fail("predicted with a run of another task"))
    assert main(["submit", "glue", "--run", f"RTE={mrpc}", "-o", str(tmp_path / "glue.zip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agora-finetune submit: error: glue: --run names a run of another task: 1 problem(s):\n"
                          f"  - RTE.tsv: --run RTE={mrpc} is a run of task 'mrpc' (labels ['not_equivalent', "
                          "'equivalent']; rte has ['entailment', 'not_entailment']), not of rte: it cannot predict "
                          "RTE.tsv; name a run of task rte")
    assert not (tmp_path / "glue.zip").exists()


def test_a_teacher_whose_weights_cannot_be_read_is_named_as_the_teacher(tmp_path, tiny_teacher):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    (teacher / "model.safetensors").unlink()
    (teacher / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=rf"^cannot load the teacher \(teacher.path '{teacher}'\): \w+Error: .*Its files "
                                         r"look incomplete or corrupt: it is the teacher that is broken, not the student"):
        Teacher(str(teacher), ["entailment", "not_entailment"])


def test_ctrl_c_inside_a_fit_says_how_to_continue(tmp_path, data_dir, tiny_bort, monkeypatch, capsys):
    """Lightning turns Ctrl-C inside ``trainer.fit`` into SystemExit(1) after its graceful shutdown (and ignores
    SIGINT from then on: restored below); the CLI still says the run was interrupted and how it continues."""
    import signal

    import lightning as L

    import agora.fit.run as fit_run

    class CtrlC(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:  # epoch 0's last.ckpt is written
                raise KeyboardInterrupt

    real = fit_run._trainer_kwargs
    monkeypatch.setattr(fit_run, "_trainer_kwargs", lambda *a: {**real(*a), "callbacks": real(*a)["callbacks"] + [CtrlC()]})
    run = tmp_path / "run"
    try:
        assert main([_write(tmp_path, _recipe(tiny_bort, data_dir, run, trainer={"max_epochs": 3}))]) == 130
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert _said(capsys) == (f"agora-finetune: interrupted; continue it from {run / 'checkpoints' / 'last.ckpt'} with "
                             f"the same command and output.dir={run} output.resume_from=last")
