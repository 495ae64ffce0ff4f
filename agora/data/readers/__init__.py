"""Readers of the benchmarks' original file layouts (GLUE TSV, SuperGLUE JSONL, RACE per-article
JSON) and their hub counterparts, and of a user's own CSV, JSON and Parquet files (through
``datasets``' packaged builders, :mod:`.tabular`); importing this package registers them all
(:mod:`.registry`)."""

from agora.data.readers import race, superglue, tabular, tsv  # noqa: F401  (they register themselves)
from agora.data.readers.registry import EXTRA_FEATURES, HUB_READERS, READERS, convert_label, register_reader

__all__ = ["EXTRA_FEATURES", "HUB_READERS", "READERS", "convert_label", "register_reader"]
