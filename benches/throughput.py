"""Throughput against the Hugging Face way, in one process: training, evaluation, teacher labelling.

Model: BORT's real shape (4 layers, hidden 1024, FFN 768, 50,265-token vocabulary), random
weights; data: the real MRPC pairs (train for training and labelling, dev for evaluation).

- **Training**, three arms, same batch size, learning rate and precision:
  - ``transformers.Trainer`` with ``run_glue``'s defaults: every pair padded to 128 tokens, random
    batches, full fine-tuning, its default fused AdamW. Every step has the same shape (batch x 128),
    so ``--baseline-steps`` of them give its rate;
  - the tuned ``transformers.Trainer``: the same with dynamic padding (``DataCollatorWithPadding``)
    and length-grouped batches (``train_sampling_strategy="group_by_length"``), the two settings a
    Trainer user turns on (:mod:`hf_peer`). Its steps differ in length: timed over one whole epoch;
  - this framework with its BORT defaults (dynamic padding, length-bucketed batches, frozen
    word-embedding table, the last layer computing only the token the head reads, fused AdamW),
    timed over one whole epoch (115 steps of 32).

  The first ``--warmup`` steps of each arm are untimed. Three ratios: ours / run_glue's Trainer,
  ours / the tuned Trainer (**the headline**: the Trainer at its best), and the tuned Trainer /
  run_glue's Trainer (what the Trainer's two settings alone are worth).
- **Evaluation**: this framework's validation loop against ``Trainer.evaluate`` padded to 128 and
  against ``Trainer.evaluate`` with dynamic padding, the MRPC dev set, same eval batch size and
  precision: two ratios.
- **Teacher labelling** (fp32): a ``transformers.pipeline("text-classification")`` over the pairs
  against :class:`agora.method.teacher.Teacher` (``inference_mode``, length-sorted batches), cold cache,
  same batch size.

    AGORA_DATA_DIR=../shared/data python benches/throughput.py              # fp32, and bf16 where the CPU has it natively
    AGORA_DATA_DIR=../shared/data python benches/throughput.py --ablations  # each change of ours turned off in turn
    AGORA_DATA_DIR=../shared/data python benches/throughput.py --profile    # where a training step's time goes

Prints the CPU, the commit and the libraries first; then rows/s of each arm and the ratios (this
framework / Hugging Face) per precision; last, a table of every figure, each row naming the CPU, the
precision and the commit. ``--task``, ``--shape tiny`` and ``--tokenizer`` run the same arms on other
rows and a small model (the bench's test). Needs ``pip install -e ".[bench]"`` (accelerate, for the
Trainer).
"""

from __future__ import annotations

import argparse
import os
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


SHAPES = {"bort": {}, "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 37}}
"""``--shape``: BORT's own, or 2 layers x 32 (the bench's test)."""


def make_model(args):
    """The student both arms train: BORT-shaped (or ``--shape``), random weights (``--seed``), the task's labels."""
    from transformers import BertForSequenceClassification

    from agora.data.cards import load_task
    from agora.fit.model import bort_config

    torch.manual_seed(args.seed)
    id2label = dict(enumerate(load_task(args.task).labels))
    return BertForSequenceClassification(bort_config(num_labels=len(id2label), id2label=id2label,
                                                     label2id={v: k for k, v in id2label.items()},
                                                     **SHAPES[args.shape]))


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
        "task": args.task,
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
    card = load_task(args.task)
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
    steps = args.steps + args.warmup if args.steps else -1
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


ARMS = {False: "transformers.Trainer (run_glue: padded to 128)",
        True: "transformers.Trainer (tuned: dynamic padding + group_by_length)"}
"""The Hugging Face arms, by ``tuned`` (:mod:`hf_peer`)."""


def _hf_data(args, tokenizer_dir: Path, split: str, tuned: bool):
    """The split tokenized with the tokenizer's own pair format: padded to 128 (run_glue) or not (tuned)."""
    from transformers import AutoTokenizer

    from agora.data.cards import load_task
    from agora.data.splits import load_split
    from hf_peer import encode_rows

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = load_split(load_task(args.task), split, Path(args.data_dir), "local")
    return encode_rows(tok, raw, 128, pad=not tuned), tok


def _hf_trainer(args, precision: str, train, eval_ds, collate, tuned: bool, steps: int, callbacks=()):
    from transformers import PrinterCallback, Trainer

    from hf_peer import trainer_args

    targs = trainer_args(Path(args.work) / "hf", precision, args.batch_size, args.batch_size, args.seed, tuned,
                         max_steps=steps, num_train_epochs=1, learning_rate=2e-5)
    trainer = Trainer(model=make_model(args), args=targs, train_dataset=train, eval_dataset=eval_ds,
                      data_collator=collate, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # its dict of metrics after each evaluate: the bench prints its own
    return trainer


def train_hf(args, tokenizer_dir: Path, precision: str, tuned: bool) -> tuple[float, int]:
    """Examples/s of a Trainer arm after ``--warmup`` untimed steps, and the steps timed: run_glue's over
    ``--baseline-steps`` (all alike), the tuned one over the whole epoch (or ``--steps``, as ours)."""
    from transformers import TrainerCallback, default_data_collator

    from hf_peer import collator

    train, tok = _hf_data(args, tokenizer_dir, "train", tuned)
    sizes: list[int] = []  # rows of each batch served, in order (a whole epoch's last batch is shorter)
    collate = collator(tok, tuned) or default_data_collator

    def counted(features):
        sizes.append(len(features))
        return collate(features)

    class Timer(TrainerCallback):
        examples, steps, start, seconds = 0, 0, None, 0.0

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                Timer.start = time.perf_counter()
            elif state.global_step > args.warmup:
                Timer.examples += sizes[state.global_step - 1]
                Timer.steps += 1
                Timer.seconds = time.perf_counter() - Timer.start

    steps = (args.steps + args.warmup if args.steps else -1) if tuned else args.baseline_steps + args.warmup
    _hf_trainer(args, precision, train, None, counted, tuned, steps, [Timer()]).train()
    return Timer.examples / Timer.seconds, Timer.steps


def eval_hf(args, tokenizer_dir: Path, precision: str, tuned: bool) -> float:
    """Rows/s of ``Trainer.evaluate`` on the dev set (the second of two calls), padded to 128 or dynamically."""
    dev, tok = _hf_data(args, tokenizer_dir, "validation", tuned)
    from hf_peer import collator

    trainer = _hf_trainer(args, precision, None, dev, collator(tok, tuned), tuned, 1)
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

    card = load_task(args.task)
    raw = load_split(card, "train", Path(args.data_dir), "local")
    raw = raw.select(range(min(args.label_rows, len(raw))))
    pairs = list(zip(raw["text_a"], raw["text_b"]))
    teacher_dir = work / "teacher"
    pipe = pipeline("text-classification", model=str(teacher_dir), device="cpu", batch_size=args.label_batch,
                    truncation=True, max_length=128)
    pipe([{"text": a, "text_pair": b} for a, b in pairs[:args.label_batch]], top_k=None)  # warm
    start = time.perf_counter()
    pipe([{"text": a, "text_pair": b} for a, b in pairs], top_k=None)
    hf = len(pairs) / (time.perf_counter() - start)
    teacher = Teacher(str(teacher_dir), list(card.labels), cache_dir=None,
                      batch_size=args.label_batch, max_length=128)
    teacher.score(pairs[:args.label_batch])  # warm (these rows are then cached: score the others cold)
    todo = pairs[args.label_batch:]
    start = time.perf_counter()
    teacher.score(todo)
    ours = len(todo) / (time.perf_counter() - start)
    assert teacher.forward_calls == len(set(pairs)), "every row went through the model once"
    return hf, ours, len(pairs)


PRECISION = {"32-true": "fp32 (32-true)", "bf16-mixed": "bf16 (bf16-mixed)"}


def training(args, model_dir: Path, tokenizer_dir: Path, precision: str, figures: list) -> None:
    """The three training arms in ``precision`` (only ours with ``--profile``), their three ratios, the ablations."""
    ours, phases = train_ours(args, model_dir, precision)
    breakdown = ", ".join(f"{k} {phases[k] * 1000:.0f} ms" for k in ("data", "forward", "backward", "optimizer"))
    print(f"[{precision}] training, agora-finetune: {ours:7.1f} examples/s over {phases['steps']} steps "
          f"(per step: {breakdown})")
    figures.append((precision, "training, agora-finetune", f"{ours:.1f} examples/s"))
    if args.profile:
        return
    rate = {}
    for tuned in (False, True):
        rate[tuned], steps = train_hf(args, tokenizer_dir, precision, tuned)
        print(f"[{precision}] training, {ARMS[tuned]}: {rate[tuned]:7.1f} examples/s over {steps} steps")
        figures.append((precision, f"training, {ARMS[tuned]}", f"{rate[tuned]:.1f} examples/s"))
    for name, ratio in (("agora-finetune / run_glue's Trainer", ours / rate[False]),
                        ("agora-finetune / the tuned Trainer (headline)", ours / rate[True]),
                        ("the tuned Trainer / run_glue's Trainer", rate[True] / rate[False])):
        print(f"[{precision}] TRAINING RATIO, {name}: {ratio:.2f}x")
        figures.append((precision, f"training ratio, {name}", f"{ratio:.2f}x"))
    for name, change in ABLATIONS if args.ablations else ():
        without, _ = train_ours(args, model_dir, precision, **change)
        print(f"[{precision}]   ablation, {name}: {without:7.1f} examples/s = {without / rate[True]:.2f}x the tuned "
              f"Trainer, {without / rate[False]:.2f}x run_glue's; our default is {ours / without:.2f}x this")
        figures.append((precision, f"ablation, {name}", f"{without:.1f} examples/s; the default {ours / without:.2f}x"))


def evaluation(args, model_dir: Path, tokenizer_dir: Path, precision: str, figures: list) -> None:
    """Ours against Trainer.evaluate padded to 128 and with dynamic padding: two ratios."""
    ours = eval_ours(args, model_dir, precision)
    print(f"[{precision}] evaluation ({args.task} dev), agora-finetune: {ours:7.1f} rows/s")
    figures.append((precision, f"evaluation ({args.task} dev), agora-finetune", f"{ours:.1f} rows/s"))
    for tuned, how in ((False, "padded to 128"), (True, "dynamic padding")):
        hf = eval_hf(args, tokenizer_dir, precision, tuned)
        print(f"[{precision}] evaluation, Trainer.evaluate ({how}): {hf:7.1f} rows/s")
        print(f"[{precision}] EVALUATION RATIO, agora-finetune / Trainer.evaluate ({how}): {ours / hf:.2f}x")
        figures += [(precision, f"evaluation, Trainer.evaluate ({how})", f"{hf:.1f} rows/s"),
                    (precision, f"evaluation ratio, agora-finetune / Trainer.evaluate ({how})", f"{ours / hf:.2f}x")]


def table(figures: list) -> str:
    """Every figure as a Markdown row naming the CPU, the precision and the commit it was measured at."""
    from evidence.fits import code_version
    from hf_peer import CODE_PATHS, cpu_name

    cpu, commit = cpu_name(), code_version(CODE_PATHS)
    rows = [f"| {cpu} | {commit} | {PRECISION[p]} | {figure} | {value} |" for p, figure, value in figures]
    return "\n".join(["| CPU | commit | precision | figure | value |", "|---|---|---|---|---|", *rows])


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--task", default="mrpc", help="a task card's name (its train and dev splits)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="bort", help="the student: BORT's shape, or 2 x 32")
    parser.add_argument("--tokenizer", help="the tokenizer's folder (default: <data dir>/tokenizers/roberta)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "both"], default="auto",
                        help="auto: fp32, and bf16 too where the CPU has native bf16")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps of this framework and of the tuned Trainer (0: one whole epoch)")
    parser.add_argument("--baseline-steps", type=int, default=20, help="timed steps of run_glue's Trainer (all alike)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--label-rows", type=int, default=1024)
    parser.add_argument("--label-batch", type=int, default=64)
    parser.add_argument("--ablations", action="store_true", help="each of our changes off in turn (training)")
    parser.add_argument("--profile", action="store_true", help="only this framework's step breakdown, per precision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/agora-throughput")
    args = parser.parse_args(argv)
    from needs import check

    check("benches/throughput.py", args.data_dir, tasks=[args.task], files=[] if args.tokenizer else ["tokenizers/roberta"],
          packages={} if args.profile else {"accelerate": ("1.1.0", "the transformers.Trainer baseline")})

    from transformers import AutoTokenizer

    from hf_peer import native_precisions, stamp

    tokenizer_dir = Path(args.tokenizer or Path(args.data_dir) / "tokenizers" / "roberta")
    work = Path(args.work)
    model_dir = work / f"{args.shape}-random"
    model_dir.mkdir(parents=True, exist_ok=True)
    model = make_model(args)
    model.bert.save_pretrained(model_dir)  # BORT-shaped, random weights
    model.save_pretrained(work / "teacher")  # the same shape with a head: the teacher of the labelling arm
    for out in (model_dir, work / "teacher"):
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)

    precisions = native_precisions(args.precision)
    print(stamp())
    print(f"{args.shape} shape, random weights; {args.task}, batch {args.batch_size}, lr 2e-5; precisions: "
          f"{', '.join(precisions)}\n")
    figures: list[tuple[str, str, str]] = []
    for precision in precisions:
        training(args, model_dir, tokenizer_dir, precision, figures)
        if not args.profile:
            evaluation(args, model_dir, tokenizer_dir, precision, figures)
        print()
    if not args.profile:
        hf, ours, n = labelling(args, work)
        print(f"[32-true] teacher labelling ({n} {args.task} rows, batch {args.label_batch}): agora Teacher "
              f"{ours:7.1f} rows/s, transformers pipeline {hf:7.1f} rows/s: {ours / hf:.2f}x")
        figures.append(("32-true", f"labelling ratio, agora Teacher / pipeline ({n} rows)",
                        f"{ours:.1f} / {hf:.1f} rows/s = {ours / hf:.2f}x"))
    print("\n" + table(figures))
    return figures


if __name__ == "__main__":
    main()
