"""Evidence v2: Agora against its baselines (docs/method.md, "What the evidence says").

The pieces of ``benches/agora_vs_plain.py``: :mod:`.stats` (paired tests, Holm, confidence
intervals), :mod:`.plan` (tasks, slices, seeds), :mod:`.arms` (what each arm trains), :mod:`.fits`
(running and reusing fits, two at a time), :mod:`.report` (tables and the plot).
"""
