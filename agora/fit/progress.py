"""A fit's progress: Lightning's bar on a terminal, plain lines in a log.

Lightning's own bar (``RichProgressBar`` where ``rich`` is installed, else ``TQDMProgressBar``) redraws
one line in place. Where the output is not a terminal (a script's log, ``nohup``, CI, a Ray worker)
rich prints nothing until the fit ends, and tqdm writes its redraws separated by carriage returns: a
log shows one line that grows by batches, not by time. Lightning leaves this to the user (its issue
6647 was closed as won't fix), so where stderr is not a terminal a fit gets :class:`LogLines` instead:
one plain line on stderr at each epoch's end and at most every ``output.progress_every_s`` seconds
in between::

    [fit <run dir name>] epoch e/E, step s/S (p%): <n> examples/s, ETA h:mm:ss, train loss <last>
    [fit <run dir name>] epoch e/E done, step s/S (p%): ..., train loss <last>, val_score <score>
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from typing import Any

from lightning.pytorch.callbacks import ProgressBar


def say(line: str) -> None:
    """Print ``line`` and flush: a log written through a pipe or a file (block-buffered) shows it at once."""
    print(line, flush=True)


def progress_callbacks(trainer_kwargs: dict[str, Any], every_s: float, name: str, stream=None) -> list:
    """The progress bar to add to a Trainer's callbacks: none where ``enable_progress_bar`` is false or the
    callbacks hold one already; Lightning's own bar where ``stream`` (default: stderr) is a terminal;
    :class:`LogLines` otherwise."""
    if not trainer_kwargs.get("enable_progress_bar", True):
        return []
    if any(isinstance(c, ProgressBar) for c in trainer_kwargs.get("callbacks") or []):
        return []
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        return [terminal_bar()]
    return [LogLines(every_s, name)]


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def terminal_bar() -> ProgressBar:
    """The bar Lightning itself adds: rich's where ``rich`` is installed, else tqdm's."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    try:
        return RichProgressBar()
    except ModuleNotFoundError:
        return TQDMProgressBar()


def duration(seconds: float) -> str:
    """``0:05:10``; ``?`` where unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(datetime.timedelta(seconds=round(seconds)))


class LogLines(ProgressBar):
    """One plain line per report on stderr (no carriage return, no colour): the epoch and the step, each of
    its total, examples/s, the ETA and the last training loss; at each epoch's end (with ``val_score``
    where the module logs it) and at most every ``every_s`` seconds in between. Rank 0 only.

    Examples/s count the training batches over the training time (validation excluded); the ETA is the
    steps left at the pace of the fit so far, validation included.
    """

    def __init__(self, every_s: float = 30.0, name: str = "fit"):
        super().__init__()
        self.every_s, self.name = float(every_s), name
        self._enabled = True
        self._start = self._last = self._paused_at = 0.0
        self._paused = 0.0  # seconds spent validating since the fit started
        self._examples = self._steps_at_start = 0
        self._loss = None  # the last training loss (a tensor)
        self._scored = False  # validation ran in this epoch

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self._last = time.monotonic()
        self._paused, self._examples, self._steps_at_start = 0.0, 0, trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from lightning.pytorch.utilities.data import extract_batch_size

        if not self._enabled:
            return
        self._examples += extract_batch_size(batch) * trainer.world_size
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss = loss.detach() if hasattr(loss, "detach") else loss  # read when written: no sync a step
        if time.monotonic() - self._last >= self.every_s and not trainer.is_last_batch:
            self._write(self.line(trainer))

    def on_validation_start(self, trainer, pl_module) -> None:
        self._paused_at = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._paused += time.monotonic() - self._paused_at
            self._scored = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        score = trainer.callback_metrics.get("val_score") if self._scored else None  # this epoch's, not an earlier one
        self._scored = False
        if self._enabled:
            tail = f", val_score {float(score):.4f}" if score is not None else ""
            self._write(self.line(trainer, done=True) + tail)

    def _write(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # sys.stderr at the time of writing: it may be redirected
        self._last = time.monotonic()

    def line(self, trainer, done: bool = False) -> str:
        """The report of now: ``[fit <name>] epoch e/E[ done], step s/S (p%): <n> examples/s, ETA h:mm:ss,
        train loss <last>``."""
        now = time.monotonic()
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        ran = step - self._steps_at_start
        trained = now - self._start - self._paused
        speed = self._examples / trained if trained > 0 else float("nan")
        eta = (total - step) * (now - self._start) / ran if ran > 0 and math.isfinite(total) else float("nan")
        of_total = f"{step}/{total} ({100 * step / total:.0f}%)" if math.isfinite(total) and total > 0 else f"{step}/?"
        loss = f"{float(self._loss):.4f}" if self._loss is not None else "?"
        return (f"[fit {self.name}] epoch {trainer.current_epoch + 1}/{epochs}{' done' if done else ''}, "
                f"step {of_total}: {speed:.1f} examples/s, ETA {duration(eta)}, train loss {loss}")
