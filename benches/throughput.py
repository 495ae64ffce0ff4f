"""Training throughput: this framework against a ``transformers.Trainer`` baseline, one process.

Both arms train a BORT-shaped model (random init, BORT's real shape: 4 layers, hidden 1024,
FFN 768, 50,265-token vocabulary) on the real MRPC training pairs for the same number of steps
with the same batch size and precision. The baseline uses ``run_glue``'s defaults: every example
padded to 128 tokens, full fine-tuning. This framework uses its defaults for BORT: dynamic
padding, length-bucketed batches, and (``--freeze-embeddings``, on by default) the frozen word
embedding table. The first ``--warmup`` steps of each arm are not timed.

    AGORA_DATA_DIR=../shared/data python benches/throughput.py            # ~5 min on 2 CPU cores
    python benches/throughput.py --steps 40 --batch-size 32 --precision fp32

Prints examples/s of both arms and the ratio (framework / baseline).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")


def make_model(seed: int):
    from transformers import BertForSequenceClassification

    from agora.modeling import bort_config

    torch.manual_seed(seed)
    return BertForSequenceClassification(bort_config(num_labels=2))


def framework(args, model_dir: Path) -> float:
    import lightning as L

    from agora.config import validate_recipe
    from agora.datamodule import TaskDataModule
    from agora.modeling import build_model, load_tokenizer
    from agora.module import AgoraModule
    from agora.tasks import load_task

    cfg = validate_recipe({
        "task": "mrpc",
        "model": {"name": str(model_dir), "init": "random", "freeze_word_embeddings": args.freeze_embeddings},
        "optim": {"lr": 2e-5, "warmup_ratio": 0.0},
        "data": {"dir": args.data_dir, "max_length": 128, "batch_size": args.batch_size},
    }, source="benches/throughput.py")
    card = load_task("mrpc")
    tokenizer, _ = load_tokenizer(cfg.model)
    data = TaskDataModule(cfg, card, tokenizer).load(predict=False)
    torch.manual_seed(args.seed)
    module = AgoraModule(build_model(cfg.model, card, args.seed), card, cfg, data.eval_names)
    timer = _LightningTimer(args.warmup)
    trainer = L.Trainer(max_steps=args.steps + args.warmup, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
                        gradient_clip_val=1.0, use_distributed_sampler=False, accelerator="cpu",
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    return timer.examples / timer.seconds


class _LightningTimer:
    def __new__(cls, warmup):
        from lightning.pytorch.callbacks import Callback

        class Timer(Callback):
            def __init__(self):
                self.warmup, self.examples, self.start, self.seconds = warmup, 0, None, 0.0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step == self.warmup:
                    self.start = time.perf_counter()
                elif trainer.global_step > self.warmup:
                    self.examples += len(batch["idx"])
                    self.seconds = time.perf_counter() - self.start

        return Timer()


def baseline(args, tokenizer_dir: Path) -> float:
    from agora.splits import load_split
    from agora.tasks import load_task
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = load_split(load_task("mrpc"), "train", Path(args.data_dir), "local")
    ds = raw.map(lambda b: tok(b["text_a"], b["text_b"], padding="max_length", max_length=128, truncation=True),
                 batched=True, remove_columns=["text_a", "text_b", "idx"]).rename_column("label", "labels")

    class Timer(TrainerCallback):
        examples, start, seconds = 0, None, 0.0

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                Timer.start = time.perf_counter()
            elif state.global_step > args.warmup:
                Timer.examples += args.batch_size
                Timer.seconds = time.perf_counter() - Timer.start

    targs = TrainingArguments(output_dir=str(Path(args.work) / "hf"), per_device_train_batch_size=args.batch_size,
                              max_steps=args.steps + args.warmup, learning_rate=2e-5, report_to=[],
                              save_strategy="no", logging_strategy="no", bf16=args.precision == "bf16",
                              use_cpu=True, dataloader_num_workers=0, seed=args.seed, disable_tqdm=True)
    Trainer(model=make_model(args.seed), args=targs, train_dataset=ds, callbacks=[Timer()]).train()
    return Timer.examples / Timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/agora-throughput")
    args = parser.parse_args()

    tokenizer_dir = Path(args.data_dir) / "tokenizers" / "roberta"
    model_dir = Path(args.work) / "bort-random"
    model_dir.mkdir(parents=True, exist_ok=True)
    make_model(args.seed).bert.save_pretrained(model_dir)  # BORT-shaped, random weights
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(model_dir)

    print(f"BORT-shaped model, MRPC train, batch {args.batch_size}, {args.steps} timed steps, {args.precision}, "
          f"{torch.get_num_threads()} threads")
    base = baseline(args, tokenizer_dir)
    ours = framework(args, model_dir)
    print(f"transformers.Trainer (run_glue defaults: pad to 128, full fine-tuning): {base:8.1f} examples/s")
    print(f"agora-finetune (dynamic padding, length buckets, frozen word embeddings={args.freeze_embeddings}): "
          f"{ours:8.1f} examples/s")
    print(f"ratio: {ours / base:.2f}x")


if __name__ == "__main__":
    main()
