"""Throughput against the plain Hugging Face way, in one process: training, evaluation, teacher labelling.

Model: BORT's real shape (4 layers, hidden 1024, FFN 768, 50,265-token vocabulary), random
weights; data: the real MRPC pairs (train for training and labelling, dev for evaluation).

- **Training**: a ``transformers.Trainer`` with ``run_glue``'s defaults (every pair padded to
  128 tokens, full fine-tuning, its default fused AdamW) against this framework with its BORT
  defaults (dynamic padding, length-bucketed batches, frozen word-embedding table, the last layer
  computing only the token the head reads, fused AdamW); same batch size and precision. Every
  baseline step has the same shape (batch x 128), so ``--baseline-steps`` of them give its rate;
  this framework's steps differ in length, so it is timed over one whole epoch (115 steps of 32),
  the first ``--warmup`` steps of each arm untimed.
- **Evaluation**: ``Trainer.evaluate`` (pad to 128) against this framework's validation loop,
  the MRPC dev set, same eval batch size and precision.
- **Teacher labelling** (fp32): a ``transformers.pipeline("text-classification")`` over the pairs
  against :class:`agora.method.teacher.Teacher` (``inference_mode``, length-sorted batches), cold cache,
  same batch size.

    AGORA_DATA_DIR=../shared/data python benches/throughput.py              # fp32, and bf16 where the CPU has it natively
    AGORA_DATA_DIR=../shared/data python benches/throughput.py --ablations  # each change of ours turned off in turn
    AGORA_DATA_DIR=../shared/data python benches/throughput.py --profile    # where a training step's time goes

Prints rows/s of each arm and the ratios (this framework / Hugging Face), with the CPU and the
precision. Needs ``pip install -e ".[bench]"`` (accelerate, for the Trainer).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

OURS = {"bucket_by_length": True, "freeze_word_embeddings": True, "first_token_last_layer": True, "fused": True,
        "compile": False}
ABLATIONS = [  # (name, the setting changed) - one at a time, everything else as OURS
    ("no length buckets (random batches, padded to their longest)", {"bucket_by_length": False}),
    ("word embeddings trained", {"freeze_word_embeddings": False}),
    ("full last layer (every position)", {"first_token_last_layer": False}),
    ("per-tensor AdamW instead of fused", {"fused": False}),
    ("torch.compile (inductor, dynamic shapes)", {"compile": True}),
]


def cpu_name() -> str:
    from agora.fit.precision import cpu_model_name, detect

    name = cpu_model_name(platform.processor() or platform.machine())
    return f"{name}, {os.cpu_count()} cores, {detect().cpu_words()}"


def make_model(seed: int):
    from transformers import BertForSequenceClassification

    from agora.fit.model import bort_config

    torch.manual_seed(seed)
    id2label = {0: "not_equivalent", 1: "equivalent"}
    return BertForSequenceClassification(bort_config(num_labels=2, id2label=id2label,
                                                     label2id={v: k for k, v in id2label.items()}))


class StepClock:
    """A Lightning callback: per-step wall time split into data, forward, backward, optimizer."""

    def __new__(cls, warmup: int):
        from lightning.pytorch.callbacks import Callback

        class Clock(Callback):
            def __init__(self):
                self.warmup, self.examples, self.steps = warmup, 0, 0
                self.phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
                self.last, self.timing = None, False

            def _lap(self, phase):
                now = time.perf_counter()
                if self.timing and self.last is not None:
                    self.phases[phase] += now - self.last
                self.last = now

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.timing = trainer.global_step >= self.warmup
                self._lap("data")

            def on_before_zero_grad(self, trainer, pl_module, optimizer):
                self._lap("forward")

            def on_after_backward(self, trainer, pl_module):
                self._lap("backward")

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self._lap("optimizer")
                if self.timing:
                    self.examples += len(batch["idx"])
                    self.steps += 1

            @property
            def seconds(self):
                return sum(self.phases.values())

        return Clock()


def _recipe(args, model_dir: Path, precision: str, **changes) -> dict:
    s = {**OURS, **changes}
    return {
        "task": "mrpc",
        "model": {"name": str(model_dir), "init": "random", "freeze_word_embeddings": s["freeze_word_embeddings"],
                  "first_token_last_layer": s["first_token_last_layer"]},
        "optim": {"lr": 2e-5, "warmup_ratio": 0.0},
        "data": {"dir": args.data_dir, "max_length": 128, "batch_size": args.batch_size,
                 "eval_batch_size": args.batch_size, "bucket_by_length": s["bucket_by_length"]},
        "trainer": {"precision": precision, "accelerator": "cpu"},
    }


def _framework(args, model_dir: Path, precision: str, **changes):
    import lightning as L

    from agora.config import validate_recipe
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import build_model, load_tokenizer
    from agora.fit.module import TaskModule
    from agora.data.cards import load_task

    s = {**OURS, **changes}
    cfg = validate_recipe(_recipe(args, model_dir, precision, **changes), source="benches/throughput.py")
    card = load_task("mrpc")
    tokenizer, _ = load_tokenizer(cfg.model)
    data = TaskDataModule(cfg, card, tokenizer).load(predict=False)
    model = build_model(cfg.model, card, args.seed)
    if s["compile"]:
        model = torch.compile(model, dynamic=True)
    module = TaskModule(model, card, cfg, data.eval_names)
    if not s["fused"]:
        configure, adamw = module.configure_optimizers, torch.optim.AdamW

        def unfused():  # the same optimizer, built without fused=True
            torch.optim.AdamW = lambda params, **kw: adamw(params, **{k: v for k, v in kw.items() if k != "fused"})
            try:
                return configure()
            finally:
                torch.optim.AdamW = adamw

        module.configure_optimizers = unfused
    return cfg, data, module, L


def train_ours(args, model_dir: Path, precision: str, **changes) -> tuple[float, dict]:
    cfg, data, module, L = _framework(args, model_dir, precision, **changes)
    clock = StepClock(args.warmup)
    steps = args.steps or -1
    trainer = L.Trainer(max_epochs=1, max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision=precision,
                        gradient_clip_val=1.0, use_distributed_sampler=False, accelerator="cpu",
                        num_sanity_val_steps=0, callbacks=[clock])
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    total = time.perf_counter() - start
    per_step = {k: v / clock.steps for k, v in clock.phases.items()}
    return clock.examples / clock.seconds, {**per_step, "steps": clock.steps, "fit_seconds": total}


def eval_ours(args, model_dir: Path, precision: str) -> float:
    cfg, data, module, L = _framework(args, model_dir, precision)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, precision=precision, use_distributed_sampler=False,
                        accelerator="cpu")
    module.eval()
    trainer.validate(module, datamodule=data, verbose=False)  # warm
    start = time.perf_counter()
    trainer.validate(module, datamodule=data, verbose=False)
    return len(data.tokenized["validation"]) / (time.perf_counter() - start)


def _hf_data(args, tokenizer_dir: Path, split: str):
    from transformers import AutoTokenizer

    from agora.data.splits import load_split
    from agora.data.cards import load_task

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = load_split(load_task("mrpc"), split, Path(args.data_dir), "local")
    ds = raw.map(lambda b: tok(b["text_a"], b["text_b"], padding="max_length", max_length=128, truncation=True),
                 batched=True, remove_columns=["text_a", "text_b", "idx"]).rename_column("label", "labels")
    return ds, raw


def _hf_trainer(args, precision: str, train, eval_ds, steps: int, callbacks=()):
    from transformers import Trainer, TrainingArguments

    targs = TrainingArguments(output_dir=str(Path(args.work) / "hf"), per_device_train_batch_size=args.batch_size,
                              per_device_eval_batch_size=args.batch_size, max_steps=steps, learning_rate=2e-5,
                              report_to=[], save_strategy="no", logging_strategy="no", bf16=precision == "bf16-mixed",
                              use_cpu=True, dataloader_num_workers=0, seed=args.seed, disable_tqdm=True)
    return Trainer(model=make_model(args.seed), args=targs, train_dataset=train, eval_dataset=eval_ds,
                   callbacks=list(callbacks))


def train_hf(args, tokenizer_dir: Path, precision: str) -> float:
    from transformers import TrainerCallback

    train, _ = _hf_data(args, tokenizer_dir, "train")

    class Timer(TrainerCallback):
        examples, start, seconds = 0, None, 0.0

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                Timer.start = time.perf_counter()
            elif state.global_step > args.warmup:
                Timer.examples += args.batch_size
                Timer.seconds = time.perf_counter() - Timer.start

    _hf_trainer(args, precision, train, None, args.baseline_steps + args.warmup, [Timer()]).train()
    return Timer.examples / Timer.seconds


def eval_hf(args, tokenizer_dir: Path, precision: str) -> float:
    dev, _ = _hf_data(args, tokenizer_dir, "validation")
    trainer = _hf_trainer(args, precision, None, dev, 1)
    trainer.evaluate()  # warm
    start = time.perf_counter()
    trainer.evaluate()
    return len(dev) / (time.perf_counter() - start)


def labelling(args, work: Path) -> tuple[float, float, int]:
    """Rows/s of a transformers pipeline and of agora's Teacher (cold cache), fp32, same pairs and batch."""
    from transformers import pipeline

    from agora.data.splits import load_split
    from agora.data.cards import load_task
    from agora.method.teacher import Teacher

    raw = load_split(load_task("mrpc"), "train", Path(args.data_dir), "local").select(range(args.label_rows))
    pairs = list(zip(raw["text_a"], raw["text_b"]))
    teacher_dir = work / "teacher"
    pipe = pipeline("text-classification", model=str(teacher_dir), device="cpu", batch_size=args.label_batch,
                    truncation=True, max_length=128)
    pipe([{"text": a, "text_pair": b} for a, b in pairs[:args.label_batch]], top_k=None)  # warm
    start = time.perf_counter()
    pipe([{"text": a, "text_pair": b} for a, b in pairs], top_k=None)
    hf = len(pairs) / (time.perf_counter() - start)
    teacher = Teacher(str(teacher_dir), ["not_equivalent", "equivalent"], cache_dir=None,
                      batch_size=args.label_batch, max_length=128)
    teacher.score(pairs[:args.label_batch])  # warm (these rows are then cached: score the others cold)
    todo = pairs[args.label_batch:]
    start = time.perf_counter()
    teacher.score(todo)
    ours = len(todo) / (time.perf_counter() - start)
    assert teacher.forward_calls == len(set(pairs)), "every row went through the model once"
    return hf, ours, len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "both"], default="auto",
                        help="auto: fp32, and bf16 too where the CPU has native bf16")
    parser.add_argument("--steps", type=int, default=0, help="timed steps of this framework (0: one whole epoch)")
    parser.add_argument("--baseline-steps", type=int, default=20, help="timed steps of the Trainer (all alike)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--label-rows", type=int, default=1024)
    parser.add_argument("--label-batch", type=int, default=64)
    parser.add_argument("--ablations", action="store_true", help="each of our changes off in turn (training, fp32)")
    parser.add_argument("--profile", action="store_true", help="only this framework's step breakdown, per precision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/agora-throughput")
    args = parser.parse_args()
    from needs import check

    check("benches/throughput.py", args.data_dir, tasks=["mrpc"], files=["tokenizers/roberta"],
          packages={} if args.profile else {"accelerate": ("1.1.0", "the transformers.Trainer baseline")})

    from transformers import AutoTokenizer

    from agora.fit.precision import detect

    tokenizer_dir = Path(args.data_dir) / "tokenizers" / "roberta"
    work = Path(args.work)
    model_dir = work / "bort-random"
    model_dir.mkdir(parents=True, exist_ok=True)
    model = make_model(args.seed)
    model.bert.save_pretrained(model_dir)  # BORT-shaped, random weights
    model.save_pretrained(work / "teacher")  # the same shape with a head: the teacher of the labelling arm
    for out in (model_dir, work / "teacher"):
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)

    precisions = {"fp32": ["32-true"], "bf16": ["bf16-mixed"], "both": ["32-true", "bf16-mixed"],
                  "auto": ["32-true"] + (["bf16-mixed"] if detect().cpu_bf16 else [])}[args.precision]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"BORT-shaped model, MRPC, batch {args.batch_size}; precisions: {', '.join(precisions)}\n")
    for precision in precisions:
        ours, phases = train_ours(args, model_dir, precision)
        breakdown = ", ".join(f"{k} {phases[k] * 1000:.0f} ms" for k in ("data", "forward", "backward", "optimizer"))
        print(f"[{precision}] agora-finetune training: {ours:7.1f} examples/s over {phases['steps']} steps "
              f"(per step: {breakdown})")
        if args.profile:
            continue
        base = train_hf(args, tokenizer_dir, precision)
        print(f"[{precision}] transformers.Trainer (run_glue defaults): {base:7.1f} examples/s")
        print(f"[{precision}] TRAINING RATIO: {ours / base:.2f}x")
        if args.ablations:
            for name, change in ABLATIONS:
                rate, _ = train_ours(args, model_dir, precision, **change)
                print(f"[{precision}]   ablation, {name}: {rate:7.1f} examples/s = {rate / base:.2f}x the Trainer; "
                      f"our default is {ours / rate:.2f}x this")
        e_ours, e_hf = eval_ours(args, model_dir, precision), eval_hf(args, tokenizer_dir, precision)
        print(f"[{precision}] evaluation (MRPC dev): agora-finetune {e_ours:7.1f} rows/s, Trainer.evaluate "
              f"{e_hf:7.1f} rows/s: {e_ours / e_hf:.2f}x")
        print()
    if not args.profile:
        hf, ours, n = labelling(args, work)
        print(f"[32-true] teacher labelling ({n} MRPC pairs, batch {args.label_batch}): agora Teacher {ours:7.1f} rows/s, "
              f"transformers pipeline {hf:7.1f} rows/s: {ours / hf:.2f}x")


if __name__ == "__main__":
    main()
