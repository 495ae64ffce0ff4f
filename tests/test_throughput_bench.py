"""The plumbing of benches/throughput.py on the tiny RTE rows with a 2-layer student: the three training arms
(ours, run_glue's Trainer, the tuned Trainer) and their three ratios, the two evaluation ratios, the labelling
ratio, each arm timed over the steps it should be, and the closing table naming the CPU, precision and commit."""

from __future__ import annotations

import re

from test_readme_commands import _bench as load_bench

NUMBER = r"(\d+\.\d+)"


def _value(out: str, pattern: str) -> float:
    found = re.findall(pattern, out)
    assert len(found) == 1, (pattern, found)
    return float(found[0][0] if isinstance(found[0], tuple) else found[0])


def test_throughput_prints_three_training_and_two_evaluation_ratios(tiny_data, tiny_tokenizer_dir, tmp_path,
                                                                    one_thread, capsys):
    bench = load_bench("throughput")
    # tiny RTE: 80 training rows = 10 batches of 8, the first untimed; 32 dev rows
    figures = bench.main(["--data-dir", str(tiny_data), "--task", "rte", "--shape", "tiny", "--tokenizer",
                          str(tiny_tokenizer_dir), "--precision", "fp32", "--batch-size", "8", "--warmup", "1",
                          "--baseline-steps", "3", "--label-rows", "24", "--label-batch", "8",
                          "--work", str(tmp_path)])
    out = capsys.readouterr().out
    from evidence.fits import code_version
    from hf_peer import CODE_PATHS, cpu_name

    commit = code_version(CODE_PATHS)
    assert out.startswith(f"CPU: {cpu_name()}; commit {commit}; torch ")
    p = r"\[32-true\] "
    ours = _value(out, p + r"training, agora-finetune: +" + NUMBER + r" examples/s over 9 steps")
    glue = _value(out, p + r"training, transformers.Trainer \(run_glue: padded to 128\): +" + NUMBER
                  + r" examples/s over 3 steps")
    tuned = _value(out, p + r"training, transformers.Trainer \(tuned: dynamic padding \+ group_by_length\): +"
                   + NUMBER + r" examples/s over 9 steps")  # the whole epoch, as ours
    for name, ratio in (("agora-finetune / run_glue's Trainer", ours / glue),
                        ("agora-finetune / the tuned Trainer \\(headline\\)", ours / tuned),
                        ("the tuned Trainer / run_glue's Trainer", tuned / glue)):
        assert abs(_value(out, p + f"TRAINING RATIO, {name}: " + NUMBER + "x") - ratio) < 0.01 + 0.01 * ratio
    assert len(re.findall("TRAINING RATIO", out)) == 3

    e_ours = _value(out, p + r"evaluation \(rte dev\), agora-finetune: +" + NUMBER + " rows/s")
    for how in ("padded to 128", "dynamic padding"):
        hf = _value(out, p + rf"evaluation, Trainer.evaluate \({how}\): +" + NUMBER + " rows/s")
        printed = _value(out, p + rf"EVALUATION RATIO, agora-finetune / Trainer.evaluate \({how}\): " + NUMBER + "x")
        assert abs(printed - e_ours / hf) < 0.01 + 0.01 * printed
    assert len(re.findall("EVALUATION RATIO", out)) == 2
    assert re.search(r"teacher labelling \(24 rte rows, batch 8\): agora Teacher +\d+\.\d rows/s, transformers "
                     r"pipeline +\d+\.\d rows/s: \d+\.\d\dx", out)

    rows = out[out.index("| CPU | commit | precision | figure | value |"):].strip().splitlines()
    assert rows[1] == "|---|---|---|---|---|" and len(rows) == 2 + len(figures) == 2 + 12
    for row, (precision, figure, value) in zip(rows[2:], figures):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells == [cpu_name(), commit, "fp32 (32-true)", figure, value]
    headline = dict((f, v) for _, f, v in figures)["training ratio, agora-finetune / the tuned Trainer (headline)"]
    assert abs(float(headline.rstrip("x")) - ours / tuned) < 0.01 + 0.01 * ours / tuned
