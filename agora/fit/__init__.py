"""The fit: the student model, the LightningModule, the precision, the run dir, ``run_fit`` and the
local runner of many fits (the second stage a run crosses; it knows nothing of Agora)."""
