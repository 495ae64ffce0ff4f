"""The plumbing of benches/search_vs_trainer.py on the tiny RTE rows with the tiny student: both searches run the
same 4 θs on the same D, E_sel and dev rows, each θ's E_sel score is printed for both arms, each winner is the
best of its arm's θs, and the wall-time ratio and the closing table (CPU, precision, commit) parse and agree."""

from __future__ import annotations

import re

import pytest

from test_readme_commands import _bench as load_bench

pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[bench]')")


def test_search_vs_trainer_prints_both_searches_on_the_same_theta(local_bort, tiny_data, tmp_path, one_thread,
                                                                  monkeypatch, capsys):
    for key in ("PYTHONPATH", "RAY_AIR_NEW_OUTPUT", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.delenv(key, raising=False)  # what the bench sets for Ray's workers is undone after the test
    bench = load_bench("search_vs_trainer")
    # tiny RTE: 80 training rows, E 32 of them (E_sel 16), D 48; 32 dev rows
    ours, hf = bench.main(["--data-dir", str(tiny_data), "--task", "rte", "--model", str(local_bort),
                           "--lrs", "1e-3,3e-3", "--epochs", "1,2", "--train-rows", "80", "--e-size", "32",
                           "--batch-size", "8", "--eval-batch-size", "32", "--max-length", "64",
                           "--precision", "32-true", "--threads", "1", "--work", str(tmp_path)])
    out = capsys.readouterr().out
    from evidence.fits import code_version
    from hf_peer import CODE_PATHS, cpu_name

    commit = code_version(CODE_PATHS)
    assert out.startswith(f"CPU: {cpu_name()}; commit {commit}; ")
    assert "rte: D 48 rows, E_sel 16 rows, dev 32 rows;" in out and "(4 θs, 6 epochs each arm)" in out
    thetas = {(1e-3, 1), (1e-3, 2), (3e-3, 1), (3e-3, 2)}
    assert set(ours.per_theta) == thetas and set(hf.per_theta) == thetas
    for arm in (ours, hf):
        assert arm.e_sel == max(arm.per_theta.values()) and arm.per_theta[arm.theta] == arm.e_sel
        assert set(arm.dev) == {"accuracy"} and 0 <= arm.dev["accuracy"] <= 1 and arm.wall_s > 0
        assert all(round(v * 16) == pytest.approx(v * 16) for v in arm.per_theta.values())  # k of 16 rows
    arms = re.findall(r"\[32-true\] (agora-finetune search \(Agora off, 1 torch threads\)|Trainer.hyperparameter_search "
                      r"\(ray; tuned Trainer, 1 torch threads\)): wall (\d+\.\d) s; best θ lr ([\de.-]+), (\d) epochs; "
                      r"best E_sel accuracy (\d+\.\d); its dev accuracy (\d+\.\d)", out)
    assert len(arms) == 2  # the Trainer's trials ran on 1 thread, as ours
    for (name, wall, lr, epochs, e_sel, dev), arm in zip(arms, (ours, hf)):
        assert (float(lr), int(epochs)) == arm.theta and float(wall) == round(arm.wall_s, 1)
        assert float(e_sel) == round(100 * arm.e_sel, 1) and float(dev) == round(100 * arm.dev["accuracy"], 1)
    ratio = float(re.search(r"WALL-TIME RATIO, Trainer search / agora-finetune search: (\d+\.\d\d)x", out).group(1))
    assert ratio == pytest.approx(hf.wall_s / ours.wall_s, abs=0.006)
    per_theta = re.findall(r"  lr ([\de.-]+), (\d) epochs: (\d+\.\d) / (\d+\.\d)", out)
    assert {(float(lr), int(e)) for lr, e, _, _ in per_theta} == thetas
    for lr, e, a, b in per_theta:
        theta = (float(lr), int(e))
        assert (float(a), float(b)) == (round(100 * ours.per_theta[theta], 1), round(100 * hf.per_theta[theta], 1))
    rows = out[out.index("| CPU | commit | precision | search |"):].strip().splitlines()
    assert len(rows) == 5 and rows[1] == "|---|---|---|---|---|---|---|---|"
    for row in rows[2:]:
        assert row.startswith(f"| {cpu_name()} | {commit} | 32-true | ")
    assert rows[4].split("|")[5].strip() == f"{ratio:.2f}x"
