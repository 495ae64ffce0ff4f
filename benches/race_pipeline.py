"""RACE data pipeline throughput, the model left out: parse, tokenize, cache, load batches.

RACE has 87,866 training questions on 25,137 articles, 4 options per question, so every question
is 4 sequences (article | question with the option) of up to ``--max-length`` tokens. This measures each
stage of the pipeline of :mod:`agora.data.splits` / :mod:`agora.data.datamodule` on the real files:

1. parse: the per-article JSON files into an Arrow table (``load_split``, fresh cache);
2. tokenize: the multiple-choice encoding (article tokenized once per question, truncated,
   never the question/option) through the cached ``Dataset.map``, in tokens/s of model input;
   baseline in the same run: the plain ``tokenizer(article, option, truncation="only_first")``
   call on the same questions, 4 pairs each;
3. reload: both again, as a second run sees them (from the memory-mapped Arrow cache);
4. load: batches/s of the training DataLoader (length buckets, padding) over the cached split;
5. (``--model-steps N``) the training step rate of a BORT-shaped multiple-choice model on the same
   batches, this machine's CPU, so the loader's rate can be compared with what it feeds.

    AGORA_DATA_DIR=../shared/data python benches/race_pipeline.py                  # all of train
    python benches/race_pipeline.py --split validation --model-steps 3              # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--task", default="race", choices=["race", "race-m", "race-h"])
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--loader-batches", type=int, default=300, help="batches timed in stage 4")
    parser.add_argument("--baseline-questions", type=int, default=4000,
                        help="questions tokenized by the plain-tokenizer baseline (it is slow)")
    parser.add_argument("--model-steps", type=int, default=0, help="timed BORT-shaped training steps (0: skip)")
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary directory, removed after")
    args = parser.parse_args(argv)
    from needs import check

    check("benches/race_pipeline.py", args.data_dir, tasks=[args.task], splits=[args.split],
          files=["tokenizers/roberta"])

    import datasets
    import numpy as np

    from agora.config import validate_recipe
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import single_sep_tokenizer
    from agora.data.splits import load_split
    from agora.data.cards import load_task

    datasets.disable_progress_bars()
    from transformers import AutoTokenizer

    root = Path(args.data_dir).resolve()
    tokenizer = single_sep_tokenizer(AutoTokenizer.from_pretrained(root / "tokenizers" / "roberta"))  # BORT's
    card = load_task(args.task)
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="race-bench-"))
    cfg = validate_recipe({"task": args.task, "data": {"dir": str(root), "max_length": args.max_length,
                                                       "batch_size": args.batch_size, "cache_dir": str(cache)}})
    dm = TaskDataModule(cfg, card, tokenizer)
    print(f"RACE pipeline bench: task {args.task}, split {args.split}, max_length {args.max_length}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs visible, cache {cache}")

    # 1. parse
    raw, t_parse = _timed(lambda: load_split(card, args.split, root, "local", cache))
    articles = len(set(raw["id"]))
    print(f"1. parse    : {len(raw):,} questions on {articles:,} articles in {t_parse:.1f}s "
          f"= {len(raw) / t_parse:,.0f} questions/s")

    # 2. tokenize (ours) and the plain tokenizer on a slice, same run
    tok, t_tok = _timed(lambda: dm._tokenize(raw, card))
    lengths = np.asarray(tok.with_format("numpy")["length"])
    per_question = [sum(len(c) for c in ids) for ids in tok.select_columns(["input_ids"])[: min(len(tok), 2000)]["input_ids"]]
    tokens = int(np.mean(per_question) * len(tok))  # model-input tokens (all 4 sequences)
    print(f"2. tokenize : {len(tok):,} questions, ~{tokens:,} input tokens in {t_tok:.1f}s "
          f"= {tokens / t_tok:,.0f} tokens/s ({len(tok) / t_tok:,.0f} questions/s)")
    n = min(args.baseline_questions, len(raw))
    sample = raw.select(range(n))
    contexts, options = sample["text_a"], sample["choices"]

    def plain():
        for article, opts in zip(contexts, options):
            tokenizer([article] * len(opts), list(opts), truncation="only_first", max_length=args.max_length)

    _, t_plain = _timed(plain)
    _, t_ours = _timed(lambda: card_encode(dm, sample, card))
    print(f"   baseline : plain tokenizer(article, option, truncation='only_first') on {n:,} questions: "
          f"{t_plain:.1f}s vs ours {t_ours:.1f}s = {t_plain / t_ours:.2f}x faster")

    # 3. reload from the cache, as the second run of a recipe does
    raw2, t_parse2 = _timed(lambda: load_split(card, args.split, root, "local", cache))
    tok2, t_tok2 = _timed(lambda: dm._tokenize(raw2, card))
    mapped = bool(tok2.cache_files) and tok2.cache_files[0]["filename"] == tok.cache_files[0]["filename"]
    print(f"3. reload   : parse {t_parse2:.2f}s + tokenize {t_tok2:.2f}s from the Arrow cache "
          f"(memory-mapped, same cache file: {mapped})")

    # 4. the training loader over the cached split
    dm.tokenized[card.train_split] = tok2
    loader = dm._loader(tok2, args.batch_size, shuffle=True)
    it = iter(loader)
    next(it)  # first batch: sampler set-up
    count, padded, real = 0, 0, 0
    start = time.perf_counter()
    for batch in it:
        count += 1
        padded += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
        if count >= args.loader_batches:
            break
    t_load = time.perf_counter() - start
    print(f"4. loader   : {count} batches in {t_load:.2f}s = {count / t_load:,.1f} batches/s "
          f"({count * args.batch_size / t_load:,.0f} questions/s, {real / t_load:,.0f} tokens/s; "
          f"padding {1 - real / padded:.1%} with length buckets)")
    print(f"   lengths  : median {int(np.median(lengths))}, {np.mean(lengths >= args.max_length):.0%} "
          f"of questions hit max_length {args.max_length} (article truncated)")

    if args.model_steps:
        rate = model_step_rate(loader, args.model_steps)
        print(f"5. model    : BORT-shaped multiple choice, fp32, this CPU: {rate:.3f} steps/s; "
              f"the loader is {count / t_load / rate:,.0f}x faster than the model consumes batches")
    if not args.cache_dir:
        shutil.rmtree(cache, ignore_errors=True)


def card_encode(dm, sample, card):
    """Our encoding of ``sample`` without the cache (what stage 2 does inside ``Dataset.map``)."""
    from agora.data.formats import format_of

    batch = sample.to_dict()
    for start in range(0, len(sample), 1000):
        chunk = {k: v[start : start + 1000] for k, v in batch.items()}
        format_of(card).encode(dm.tokenizer, card, chunk, dm.cfg.data.max_length)


def model_step_rate(loader, steps: int) -> float:
    """Forward + backward + AdamW step of BORT's shape (4 layers, hidden 1024) on the loader's batches."""
    import torch
    from transformers import BertForMultipleChoice

    from agora.fit.model import bort_config

    torch.manual_seed(0)
    model = BertForMultipleChoice(bort_config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    it = iter(loader)

    def step():
        batch = next(it)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up, not timed
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
