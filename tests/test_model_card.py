"""The model card in every export (``best/README.md``, read back with ``huggingface_hub.ModelCard.load``) and
the upload to the Hub (``output.push_to_hub``, ``agora-finetune push``), tested against a fake ``HfApi``: the
network cannot be reached here."""

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from agora.config import validate_recipe
from agora.errors import HubError, RecipeError
from agora.trainer import AgoraTrainer

AGORA = {"enabled": True, "expand_every_n_epochs": 1, "variants_per_mistake": 2, "alpha": 0.5}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_bort, tiny_teacher, data_dir) -> Path:
    run = tmp_path_factory.mktemp("card") / "run"
    teacher = {"path": str(tiny_teacher), "cache_dir": str(run.parent / "teacher-cache")}
    recipe = tiny_recipe(tiny_bort, data_dir, run, agora=AGORA, teacher=teacher, output={"predict": False})
    AgoraTrainer(validate_recipe(recipe)).fit()
    return run


def test_card_metadata_matches_metrics_json(exported):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported / "best" / "README.md")
    metrics = json.loads((exported / "metrics.json").read_text())
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.base_model) == ("transformers", "text-classification", None)
    assert {"agora-finetune", "glue", "rte", "agora"} <= set(data.tags) and data.datasets == ["nyu-mll/glue"]
    results = [(r.task_type, r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type, r.metric_value)
               for r in data.eval_results]
    assert results == [("text-classification", "nyu-mll/glue", "rte", "validation", "accuracy",
                        metrics["final"]["validation/accuracy"])]
    text = card.text
    assert f"| validation (dev) | accuracy | {metrics['final']['validation/accuracy']:.4f} |" in text
    assert f"| accuracy | {metrics['final']['e_sel/accuracy']:.4f} |" in text  # E_sel, which picked it
    assert f"generated rows kept: {metrics['agora']['generated']}" in text and "- precision: `32-true`" in text
    recipe = yaml.safe_load((exported / "config.yaml").read_text())
    assert f"- teacher: `{recipe['teacher']['path']}`" in text
    shown = re.search(r"## Recipe.*?```yaml\n(.*?)```", text, re.S).group(1)
    assert yaml.safe_load(shown) == recipe
    assert yaml.safe_load(re.search(r"Agora's settings:\n\n```yaml\n(.*?)```", text, re.S).group(1)) == {
        "agora": recipe["agora"]}


def test_card_says_how_to_load_the_export_with_pipeline(exported):
    from transformers import pipeline

    snippet = re.search(r"```python\n(.*?)```", (exported / "best" / "README.md").read_text(), re.S).group(1)
    assert f"pipeline(\"text-classification\", model={str(exported / 'best')!r})" in snippet
    model = pipeline("text-classification", model=str(exported / "best"), device="cpu")
    out = model({"text": "The cat sat on the mat.", "text_pair": "A cat sat."})
    assert out["label"] in ("entailment", "not_entailment") and 0 < out["score"] <= 1


def test_card_names_a_hub_base_model_and_a_search(exported):
    from agora.data.cards import load_task
    from agora.fit.model_card import card_data

    recipe = {"model": {"name": "amazon/bort"}, "agora": {"enabled": False}}
    metrics = {"final": {"validation/accuracy": 0.8, "validation/f1": 0.85, "e_sel/accuracy": 0.7,
                         "e_sel/loglik": -0.5}, "search": {"rounds": 2, "fits": 6}}
    data = card_data(recipe, load_task("mrpc"), metrics)
    assert data.base_model == "amazon/bort"
    assert "hyperparameter-search" in data.tags and "plain-fine-tuning" in data.tags
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("accuracy", 0.8), ("f1", 0.85)]
    recipe["model"]["name"] = str(exported / "best")  # a local folder is no Hub id
    assert card_data(recipe, load_task("mrpc"), metrics).base_model is None


class FakeHfApi:
    """Records the calls ``push`` makes; ``refuse`` raises what the Hub answers a user who is not logged in."""

    calls: list = []
    refuse = False

    def create_repo(self, repo_id, **kwargs):
        if self.refuse:
            import httpx
            from huggingface_hub.errors import HfHubHTTPError

            url = "https://huggingface.co/api/repos/create"
            raise HfHubHTTPError(f"401 Client Error: Unauthorized for url: {url}",
                                 response=httpx.Response(401, request=httpx.Request("POST", url)))
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        readme = (Path(kwargs["folder_path"]) / "README.md").read_text()
        self.calls.append(("upload_folder", kwargs, files, readme))


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    FakeHfApi.calls, FakeHfApi.refuse = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


def _copy(exported: Path, tmp_path: Path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported, run, ignore=shutil.ignore_patterns("checkpoints"))
    return run


def test_push_uploads_best_with_its_card_to_a_private_repo(exported, tmp_path, hub, capsys):
    from agora.fit.hub import push

    run = _copy(exported, tmp_path)
    url = push(run, "me/bort-rte")
    (_, repo_id, created), (_, upload, files, readme) = hub.calls
    assert (repo_id, created) == ("me/bort-rte", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert upload["repo_id"] == "me/bort-rte" and upload["repo_type"] == "model"
    assert upload["folder_path"] == str(run / "best")
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    assert "model='me/bort-rte'" in readme and str(run / "best") not in readme  # the card names where it went
    assert url == "https://huggingface.co/me/bort-rte"
    assert "pushed " + str(run / "best") + " to https://huggingface.co/me/bort-rte (private)" in capsys.readouterr().out


def test_push_command_and_push_to_hub_setting(exported, tmp_path, hub):
    from agora.cli import main
    from agora.data.cards import load_task
    from agora.fit.publish import after_run

    run = _copy(exported, tmp_path)
    assert main(["push", str(run / "best"), "org/bort-rte", "--public"]) == 0
    assert hub.calls[0][1:] == ("org/bort-rte", {"private": False, "exist_ok": True, "repo_type": "model"})
    hub.calls.clear()
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    recipe["output"].update(dir=str(run), push_to_hub="me/from-recipe")
    after_run(run, validate_recipe(recipe), load_task("rte"))  # what a fit does once metrics.json is written
    assert [c[1] for c in hub.calls if c[0] == "create_repo"] == ["me/from-recipe"]
    assert hub.calls[0][2]["private"] is True


def test_push_fails_at_once_offline_or_refused(exported, tmp_path, hub, monkeypatch, capsys, tiny_bort, data_dir):
    from agora.cli import main
    from agora.fit.hub import push

    hub.refuse = True
    with pytest.raises(HubError, match="push to me/x failed: HfHubHTTPError: 401.*hf auth login.*HF_TOKEN"):
        push(exported, "me/x")
    with pytest.raises(RecipeError, match="'not a repo!' is not a Hub repo id"):
        push(exported, "not a repo!")
    with pytest.raises(RecipeError, match="no exported model to push"):
        push(tmp_path, "me/x")
    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run", output={"push_to_hub": "me/x", "export": False})
    with pytest.raises(RecipeError, match="output.push_to_hub uploads the export .best/.: set output.export: true"):
        validate_recipe(recipe)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(exported), "me/x"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run", output={"push_to_hub": "me/x"})
    with pytest.raises(RecipeError, match="output.push_to_hub.*HF_HUB_OFFLINE is set.*agora-finetune push"):
        validate_recipe(recipe)  # before any work: no run dir
    assert hub.calls == [] and not (tmp_path / "run").exists()
