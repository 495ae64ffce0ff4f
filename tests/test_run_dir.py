"""The run dir and the other settings checked before any work: a finished or unfinished run is never
replaced by accident (``output.overwrite``, ``output.resume_from``), an output.dir that is a file or
cannot be written, trainer settings Lightning refuses, ``data.max_length`` beyond the model's positions; a
fit that fails before training leaves no run dir behind."""

import json
import tempfile
from pathlib import Path

import pytest
from conftest import tiny_recipe

from agora.cli import main
from agora.config import validate_recipe
from agora.errors import RecipeError
from agora.trainer import AgoraTrainer


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


def _recipe(tiny_bort, data_dir, out, **sections):
    return tiny_recipe(tiny_bort, data_dir, out, **{"trainer": {"max_epochs": 1}, "output": {"predict": False}, **sections})


def _fit(recipe):
    return AgoraTrainer(validate_recipe(recipe)).fit()


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_finished_run_is_refused_unless_overwrite_or_resume_from(tmp_path, data_dir, tiny_bort):
    run = tmp_path / "run"
    recipe = _recipe(tiny_bort, data_dir, run)
    _fit(recipe)
    before = _snapshot(run)
    with pytest.raises(RecipeError) as err:
        _fit(_recipe(tiny_bort, data_dir, run, optim={"lr": 5e-4}))
    msg = str(err.value)
    assert f"output.dir {run} holds a finished run" in msg
    assert "output.resume_from: last" in msg and "output.overwrite: true" in msg and "another output.dir" in msg
    assert _snapshot(run) == before, "nothing in the finished run changed"

    _fit(_recipe(tiny_bort, data_dir, run, optim={"lr": 5e-4}, output={"predict": False, "overwrite": True}))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-epoch0.ckpt", "last.ckpt"], "no -v1 beside an old one"
    config = (run / "config.yaml").read_text()
    assert "lr: 0.0005" in config and "overwrite: false" in config  # config.yaml reruns without deleting anything
    assert json.loads((run / "metrics.json").read_text())["epochs"][0]["epoch"] == 0

    resumed = _recipe(tiny_bort, data_dir, run, optim={"lr": 5e-4}, trainer={"max_epochs": 2},
                      output={"predict": False, "resume_from": "last"})
    _fit(resumed)
    assert [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["epochs"]] == [0, 1]

    both = _recipe(tiny_bort, data_dir, run, output={"overwrite": True, "resume_from": "last"})
    with pytest.raises(RecipeError, match="set only one of them"):
        _fit(both)


def test_a_fit_hands_its_run_dir_to_the_ranks_it_starts_for_its_span_only(tmp_path, data_dir, tiny_bort, monkeypatch):
    """Lightning's launcher starts the other DDP ranks by running the same command again: for the span of the
    fit, AGORA_RUN_DIR holds the run dir (here the default runs/<task>-<time>), and a rank resolves that one.
    Resolving a run dir writes nothing, and the fit leaves the environment as it found it."""
    import os

    import lightning as L

    from agora.fit import rundir
    from agora.fit.run import Extension, run_fit

    monkeypatch.chdir(tmp_path)
    assert rundir.resolve_run_dir(None, "rte").parent == Path("runs")
    assert "AGORA_RUN_DIR" not in os.environ, "resolving alone exports nothing"
    seen = []

    class Seen(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            seen.append(os.environ.get("AGORA_RUN_DIR"))

    recipe = _recipe(tiny_bort, data_dir, tmp_path)
    del recipe["output"]["dir"]
    result = run_fit(validate_recipe(recipe), extend=lambda cfg, card, run_dir: Extension("seen", callbacks=[Seen()]))
    assert result.run_dir.parent == Path("runs") and result.run_dir.name.startswith("rte-")
    assert seen == [str(result.run_dir)] and "AGORA_RUN_DIR" not in os.environ

    handed = str(tmp_path / "from-rank-0")
    monkeypatch.setenv("AGORA_RUN_DIR", handed)
    assert rundir.resolve_run_dir(None, "rte") == Path(handed)
    assert rundir.resolve_run_dir(str(tmp_path / "given"), "rte") == tmp_path / "given", "output.dir comes first"
    with rundir.shared_with_ranks(tmp_path / "other"):
        assert os.environ["AGORA_RUN_DIR"] == str(tmp_path / "other")
    assert os.environ["AGORA_RUN_DIR"] == handed


def test_an_unfinished_run_is_refused_without_resume_from(tmp_path, data_dir, tiny_bort):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("task: rte\n")
    with pytest.raises(RecipeError, match=rf"output.dir {run} holds an unfinished run.*output.resume_from: last to "
                                          r"continue it \(from checkpoints/last.ckpt\)"):
        _fit(_recipe(tiny_bort, data_dir, run))
    with pytest.raises(RecipeError, match=r"output.resume_from: no checkpoint at .*last.ckpt"):
        _fit(_recipe(tiny_bort, data_dir, run, output={"resume_from": "last"}))
    assert (run / "config.yaml").read_text() == "task: rte\n"


def _unwritable(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (a read-only folder; as root, which ignores modes,
    /sys)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("no unwritable directory on this machine")


def test_output_dir_that_is_a_file_or_unwritable_fails_before_anything_loads(tmp_path, data_dir, capsys):
    """The model does not exist either: the output dir is checked first (was a raw FileExistsError / OSError
    after the data and the model had loaded)."""
    a_file = tmp_path / "taken"
    a_file.write_text("not a dir")
    locked = _unwritable(tmp_path)
    cases = [(a_file, f"output.dir {a_file} is an existing file, not a directory"),
             (a_file / "run", f"output.dir {a_file / 'run'} cannot be created: {a_file} is a file"),
             (locked / "run", f"output.dir {locked / 'run'} is not writable")]
    for out, expected in cases:
        recipe = tmp_path / "r.json"
        recipe.write_text(json.dumps(tiny_recipe(tmp_path / "no-such-model", data_dir, out)))
        assert main([str(recipe)]) == 2
        err = capsys.readouterr().err
        assert expected in err and "no-such-model" not in err and "Traceback" not in err, err
    assert a_file.read_text() == "not a dir" and not (locked / "run").exists()


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=abc", "'trainer.max_epochs': lightning.Trainer expects an integer or null, got 'abc'"),
    ("trainer.precision=16x", "'trainer.precision': lightning.Trainer expects one of 'auto'"),
    ("trainer.strategy=nope", "trainer: lightning.Trainer refuses these settings: ValueError: You selected an invalid strategy name"),
    ("trainer.val_check_interval=100", "trainer: lightning.Trainer stopped before training: ValueError: `val_check_interval` (100)"),
    ("trainer.accumulate_grad_batches=0", "'trainer.accumulate_grad_batches' must be at least 1, got 0"),
])
def test_trainer_settings_lightning_refuses_are_errors_and_leave_no_run_dir(override, expected, tmp_path, data_dir,
                                                                            tiny_bort, capsys):
    run = tmp_path / "run"
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(_recipe(tiny_bort, data_dir, run)))
    assert main([str(recipe), override]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
    assert not run.exists(), "no run dir left behind"


def test_a_fit_failing_before_training_leaves_no_run_dir(tmp_path, data_dir, tiny_bort, capsys):
    """output.resume_from: last in a new dir (left its config.yaml), a missing data file, the checkpoint of
    another model: errors before any training, and no stray run dir."""
    run = tmp_path / "run"
    with pytest.raises(RecipeError, match="output.resume_from: no checkpoint"):
        _fit(_recipe(tiny_bort, data_dir, run, output={"resume_from": "last"}))
    assert not run.exists()
    from agora.errors import DataError

    with pytest.raises(DataError):
        _fit(_recipe(tiny_bort, data_dir, run, data={"files": {"train": str(tmp_path / "nope.tsv")}}))
    assert not run.exists()
    other = tmp_path / "other"
    _fit(_recipe(tiny_bort, data_dir, other, task="stsb", data={"max_train_samples": 64, "max_eval_samples": 32}))
    with pytest.raises(RecipeError, match=r"output.resume_from: .*last.ckpt holds another model .*of another shape"):
        _fit(_recipe(tiny_bort, data_dir, run, output={"resume_from": str(other / "checkpoints" / "last.ckpt")}))
    assert not run.exists()


def test_max_length_beyond_the_models_positions_is_an_error_before_training(tmp_path, data_dir, tiny_bort, tiny_teacher):
    run = tmp_path / "run"
    with pytest.raises(RecipeError, match=r"data.max_length 100000 is longer than model '.*' can read: 514 tokens "
                                          r".*set data.max_length to at most 514"):
        _fit(_recipe(tiny_bort, data_dir, run, data={"max_length": 100000}))
    assert not run.exists()
    agora = {"agora": {"enabled": True, "expand_every_n_epochs": 0}, "teacher": {"path": str(tiny_teacher), "max_length": 4096}}
    with pytest.raises(RecipeError, match=r"teacher.max_length 4096 is longer than model '.*' can read: 512 tokens"):
        _fit(_recipe(tiny_bort, data_dir, run, **agora))
    assert not run.exists()
    search = {"search": {"space": {"optim.lr": [1e-3, 1e-4]}, "max_rounds": 1}}  # every fit of a search, before the first
    with pytest.raises(RecipeError, match=r"data.max_length 100000 is longer than model '.*' can read: 514 tokens"):
        _fit(_recipe(tiny_bort, data_dir, run, data={"max_length": 100000}, **search))
    assert not run.exists()


def test_position_limits_of_bert_and_roberta_shaped_models():
    from transformers import BertConfig, RobertaConfig

    from agora.fit.model import position_limit

    assert position_limit(BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
