"""``trainer.precision: auto``: resolved per machine; capabilities faked where torch is asked."""

import json
import warnings

import pytest
import torch
import yaml

from agora.fit import precision as P
from agora.config import load_recipe
from agora.paths import RECIPES_DIR
from conftest import tiny_recipe

AVX2 = P.Capabilities(cpu_capability="AVX2")
AVX512 = P.Capabilities(cpu_capability="AVX512")  # AVX512 alone is not bf16
AVX512_BF16 = P.Capabilities(cpu_capability="AVX512", cpu_avx512_bf16=True)
AMX = P.Capabilities(cpu_capability="AVX512", cpu_amx=True)
AMPERE = P.Capabilities(cuda=True, cuda_bf16=True, cpu_capability="AVX2")
VOLTA = P.Capabilities(cuda=True, cuda_bf16=False, cpu_capability="AVX2")
MAC = P.Capabilities(mps=True)


@pytest.mark.parametrize("caps, accelerator, expected", [
    (AVX2, "auto", "32-true"),
    (AVX512, "auto", "32-true"),
    (AVX512_BF16, "auto", "bf16-mixed"),
    (AMX, "auto", "bf16-mixed"),
    (AMPERE, "auto", "bf16-mixed"),
    (AMPERE, "gpu", "bf16-mixed"),
    (VOLTA, "auto", "16-mixed"),
    (AMPERE, "cpu", "32-true"),          # a GPU machine told to train on its AVX2 CPU
    (MAC, "auto", "32-true"),
    # ATEN_CPU_CAPABILITY=avx2 on a CPU with AVX512-BF16: torch's kernels cannot use its bf16
    (P.Capabilities(cpu_capability="AVX2", cpu_avx512_bf16=True), "auto", "32-true"),
])
def test_auto_resolves_per_machine(caps, accelerator, expected):
    resolved = P.resolve_precision("auto", accelerator, caps)
    assert resolved.precision == expected and resolved.requested == "auto" and resolved.warning is None
    assert expected in resolved.line() and "auto" in resolved.line()


def test_detect_asks_torch_at_the_boundary(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    caps = P.detect()
    assert caps == AVX2
    assert P.resolve_precision("auto").precision == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert P.detect().cpu_amx and P.resolve_precision("auto").precision == "32-true"  # AVX2 kernels in use
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert P.resolve_precision("auto").precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert P.resolve_precision("auto").precision == "16-mixed"


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_is_fp32_on_a_cpu_without_bf16(path):
    cfg = load_recipe(path)
    assert cfg.trainer["precision"] == "auto"
    trainer, resolved = P.resolve_trainer(cfg.trainer, AVX2)
    assert trainer["precision"] == "32-true" and resolved.warning is None
    assert P.resolve_trainer(cfg.trainer, AVX512_BF16)[0]["precision"] == "bf16-mixed"


def test_explicit_bf16_on_a_cpu_without_bf16_warns_once_and_keeps_it():
    with pytest.warns(P.PrecisionWarning) as caught:
        trainer, resolved = P.resolve_trainer({"precision": "bf16-mixed", "accelerator": "cpu"}, AVX2)
    assert trainer["precision"] == "bf16-mixed"  # the recipe's choice is kept
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "without native bf16" in message and "AVX2" in message and "trainer.precision: auto" in message


@pytest.mark.parametrize("caps, trainer", [
    (AVX512_BF16, {"precision": "bf16-mixed"}),       # native bf16: fine
    (AVX2, {"precision": "32-true"}),
    (AMPERE, {"precision": "bf16-mixed"}),            # on the GPU
])
def test_no_warning_where_the_precision_fits(caps, trainer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_trainer(trainer, caps)[0]["precision"] == trainer["precision"]


def test_a_fit_prints_and_saves_the_resolved_precision(tmp_path, data_dir, tiny_bort, monkeypatch, capsys):
    from agora.config import validate_recipe
    from agora.trainer import AgoraTrainer

    monkeypatch.setattr(P, "detect", lambda: AVX2)
    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run",
                         trainer={"max_epochs": 1, "precision": "auto"},
                         data={"max_train_samples": 32, "max_eval_samples": 16},
                         output={"dir": str(tmp_path / "run"), "predict": False, "export": False})
    AgoraTrainer(validate_recipe(recipe)).fit()
    out = capsys.readouterr().out
    assert "precision: auto -> 32-true (CPU, AVX2 without AVX512-BF16 or AMX)" in out.splitlines()[0]
    config_text = (tmp_path / "run" / "config.yaml").read_text()
    assert yaml.safe_load(config_text)["trainer"]["precision"] == "32-true"
    assert "# precision: auto -> 32-true" in config_text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == {"value": "32-true", "requested": "auto",
                                    "why": "CPU, AVX2 without AVX512-BF16 or AMX"}


def test_bf16_fit_clips_gradients_with_the_fused_optimizer(tmp_path, data_dir, tiny_bort, monkeypatch):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimizer; without a scaler (bf16)
    the module clips itself: the run finishes, the optimizer is fused and the gradients are clipped."""
    from agora.config import validate_recipe
    from agora.fit.module import TaskModule
    from agora.trainer import AgoraTrainer

    seen = {"fused": [], "norm": []}
    clip = TaskModule.configure_gradient_clipping

    def spy(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        seen["fused"].append(optimizer.defaults.get("fused"))
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen["norm"].append(float(torch.nn.utils.get_total_norm(grads)))

    monkeypatch.setattr(TaskModule, "configure_gradient_clipping", spy)
    recipe = tiny_recipe(tiny_bort, data_dir, tmp_path / "run",
                         trainer={"max_epochs": 1, "precision": "bf16-mixed", "gradient_clip_val": 0.01},
                         data={"max_train_samples": 64, "max_eval_samples": 16},
                         output={"dir": str(tmp_path / "run"), "predict": False, "export": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.PrecisionWarning)
        AgoraTrainer(validate_recipe(recipe)).fit()
    assert seen["fused"] and all(f is True for f in seen["fused"])
    assert max(seen["norm"]) <= 0.01 + 1e-4
