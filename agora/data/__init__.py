"""Data: task cards, readers of the benchmarks' files, the generic formats, splits, E, metrics, batches
and the LightningDataModule (the first stage a run crosses)."""
