"""The Hugging Face peer the speed benches measure against, and the stamp every figure of theirs carries.

Two ways to run ``transformers.Trainer`` (:func:`trainer_args`, :func:`encode_rows`, :func:`collator`):

- ``run_glue``: what ``run_glue.py`` does by default: every row padded to ``max_length``, random batches;
- ``tuned``: what a user who knows the Trainer sets: dynamic padding (``DataCollatorWithPadding``: each
  batch padded to its longest row) and length-grouped batches (``train_sampling_strategy=
  "group_by_length"`` in transformers 5, ``group_by_length=True`` before).

Both keep the Trainer's other defaults (fused AdamW from torch 2.8 on, gradient clipping at 1.0, linear
decay) and train the whole model. :func:`stamp` names the CPU, its native precisions and the commit.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CODE_PATHS = ("agora", "benches", "pyproject.toml")
"""What a speed bench runs: a change elsewhere (the README, the tests) leaves its commit clean."""


def cpu_name() -> str:
    """``<model name>, <n> cores, <vector unit and native bf16>``."""
    from agora.fit.precision import cpu_model_name, detect

    name = cpu_model_name(platform.processor() or platform.machine())
    return f"{name}, {os.cpu_count()} cores, {detect().cpu_words()}"


def stamp() -> str:
    """The line every bench prints first: CPU, commit, the libraries' versions and torch's threads."""
    import torch
    import transformers

    from evidence.fits import code_version

    return (f"CPU: {cpu_name()}; commit {code_version(CODE_PATHS)}; torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads), transformers {transformers.__version__}")


def native_precisions(choice: str) -> list[str]:
    """``auto``: fp32, and bf16 too where the CPU has native bf16 (AVX512-BF16 or AMX); else as named."""
    from agora.fit.precision import detect

    return {"fp32": ["32-true"], "bf16": ["bf16-mixed"], "both": ["32-true", "bf16-mixed"],
            "auto": ["32-true"] + (["bf16-mixed"] if detect().cpu_bf16 else [])}[choice]


def sampling(tuned: bool) -> dict:
    """The TrainingArguments field that groups batches by length, under this transformers' name."""
    from transformers import TrainingArguments

    if not tuned:
        return {}
    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:  # transformers 5
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def trainer_args(out: Path, precision: str, batch_size: int, eval_batch_size: int, seed: int, tuned: bool,
                 **more):
    """TrainingArguments on the CPU, silent (no logs, no saves, no progress bar), in ``precision``."""
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size,
                             per_device_eval_batch_size=eval_batch_size, report_to=[], save_strategy="no",
                             logging_strategy="no", bf16=precision == "bf16-mixed", use_cpu=True,
                             dataloader_num_workers=0, seed=seed, disable_tqdm=True, **sampling(tuned), **more)


def encode_rows(tokenizer, raw, max_length: int, pad: bool):
    """``raw`` (a split with ``text_a``, maybe ``text_b``, and ``label``) tokenized for the Trainer: padded to
    ``max_length`` (``pad``: run_glue) or not (the collator pads each batch: tuned); ``label`` -> ``labels``."""
    pair = "text_b" in raw.column_names

    def tokenize(batch):
        return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=max_length,
                         padding="max_length" if pad else False)

    keep = {"label"}
    ds = raw.map(tokenize, batched=True, remove_columns=[c for c in raw.column_names if c not in keep])
    return ds.rename_column("label", "labels")


def collator(tokenizer, tuned: bool):
    """``DataCollatorWithPadding`` for the tuned Trainer; None (the default collator: rows already padded)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer) if tuned else None
