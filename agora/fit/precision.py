"""``trainer.precision: auto``: the fastest safe precision for the machine a run starts on.

Resolved once, at the start of a run (:func:`resolve_precision`), and written into the run's
``config.yaml`` and ``metrics.json``:

| machine | ``auto`` resolves to |
|---|---|
| CUDA GPU with bf16 (Ampere and later) | ``bf16-mixed`` |
| older CUDA GPU | ``16-mixed`` |
| CPU with native bf16 (AVX512-BF16 or AMX) | ``bf16-mixed`` |
| any other CPU (AVX2 or AVX512 without BF16), Apple MPS | ``32-true`` |

Why (measured, see the README's Performance section): on a CPU without native bf16, bf16
autocast is emulated and was 28x slower than fp32 for all-MiniLM-L6-v2 on a 2-core AMD EPYC
with AVX2 only; on a CPU with AVX512-BF16 it is about 2x faster than fp32. A recipe that states
a precision keeps it; an explicit bf16 on a CPU without native bf16 runs with one
:class:`PrecisionWarning` that says why it will be slow and what to write instead.

The machine is asked through :func:`detect` alone (the one place torch is queried), so tests fake
the capabilities there.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

AUTO = "auto"


class PrecisionWarning(UserWarning):
    """A precision that will run, but much slower than the machine allows."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What the machine offers, as torch reports it."""

    cuda: bool = False
    cuda_bf16: bool = False
    mps: bool = False
    cpu_avx512_bf16: bool = False
    cpu_amx: bool = False
    cpu_capability: str = ""
    """``torch.backends.cpu.get_cpu_capability()``: "AVX2", "AVX512", ... (it does not say bf16)."""

    @property
    def cpu_bf16(self) -> bool:
        """Native bf16 that torch's CPU kernels use: AVX512-BF16 or AMX, with torch running its AVX512
        kernels (``ATEN_CPU_CAPABILITY=avx2`` on such a CPU leaves bf16 emulated, as on an AVX2 CPU)."""
        in_use = not self.cpu_capability or self.cpu_capability.upper().startswith("AVX512")
        return (self.cpu_avx512_bf16 or self.cpu_amx) and in_use

    def cpu_words(self) -> str:
        """The CPU in a few words, for messages and reports: "AVX512 with AVX512-BF16"."""
        extra = [name for name, has in (("AVX512-BF16", self.cpu_avx512_bf16), ("AMX", self.cpu_amx)) if has]
        if extra and not self.cpu_bf16:
            return f"{self.cpu_capability} kernels (the CPU's {' and '.join(extra)} unused)"
        base = self.cpu_capability or "unknown vector unit"
        return f"{base} with {' and '.join(extra)}" if extra else f"{base} without AVX512-BF16 or AMX"


def cpu_model_name(default: str = "this CPU") -> str:
    """The CPU's model name as /proc/cpuinfo gives it (``default`` where it cannot be read)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def detect() -> Capabilities:
    """Ask torch what this machine offers (CUDA, bf16 on CUDA, MPS, native bf16 on the CPU)."""
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(
        cuda=cuda,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        mps=mps,
        cpu_avx512_bf16=bool(_ask(torch.cpu, "_is_avx512_bf16_supported")),
        cpu_amx=bool(_ask(torch.cpu, "_is_amx_tile_supported")),
        cpu_capability=str(_ask(torch.backends.cpu, "get_cpu_capability") or ""),
    )


def _ask(module, name: str):
    fn = getattr(module, name, None)
    try:
        return fn() if fn is not None else None
    except Exception:  # an old torch or an exotic platform: treat as absent
        return None


def _device(accelerator: Any, caps: Capabilities) -> str:
    """Where Lightning will put the run: "cuda", "mps" or "cpu" (from ``trainer.accelerator``)."""
    name = str(accelerator if accelerator is not None else "auto").lower()
    if name in ("cuda", "gpu"):
        return "cuda" if caps.cuda or not caps.mps else "mps"
    if name in ("cpu", "mps"):
        return name
    return "cuda" if caps.cuda else "mps" if caps.mps else "cpu"


def _is_bf16(precision: str) -> bool:
    return str(precision).startswith("bf16")


@dataclasses.dataclass(frozen=True)
class Resolved:
    precision: str
    """What Lightning gets: ``bf16-mixed``, ``16-mixed``, ``32-true`` or the recipe's own value."""
    requested: str
    reason: str
    """One line: why this precision, naming the device and its capabilities."""
    warning: str | None = None

    def line(self) -> str:
        told = f"{self.requested} -> {self.precision}" if self.requested != self.precision else self.precision
        return f"precision: {told} ({self.reason})"


def resolve_precision(requested: Any, accelerator: Any = "auto", caps: Capabilities | None = None) -> Resolved:
    """Resolve ``trainer.precision`` for this machine; see the module docstring for the table.

    Args:
        requested: the recipe's ``trainer.precision`` (``auto``, or any Lightning value, kept as is).
        accelerator: the recipe's ``trainer.accelerator`` (``auto``, ``cpu``, ``gpu``, ``cuda``, ...).
        caps: the machine (default: :func:`detect`).

    Returns:
        A :class:`Resolved`; ``warning`` is set for an explicit bf16 on a CPU without native bf16.

    Example:
        >>> resolve_precision("auto", "cpu", Capabilities(cpu_capability="AVX2")).precision
        '32-true'
    """
    caps = caps or detect()
    device = _device(accelerator, caps)
    requested = AUTO if requested is None else str(requested)
    if requested != AUTO:
        warning = None
        if device == "cpu" and _is_bf16(requested) and not caps.cpu_bf16:
            warning = (f"trainer.precision: {requested} on a CPU without native bf16 ({caps.cpu_words()}): "
                       "bf16 is emulated there and training can be many times slower than fp32 (28x measured "
                       "on an AVX2 AMD EPYC). Write trainer.precision: auto (or 32-true) to run in fp32 on this "
                       "machine and bf16 where the hardware has it.")
        return Resolved(requested, requested, f"set in the recipe; {device}", warning)
    if device == "cuda":
        if caps.cuda_bf16:
            return Resolved("bf16-mixed", AUTO, "CUDA GPU with bf16")
        return Resolved("16-mixed", AUTO, "CUDA GPU without bf16")
    if device == "mps":
        return Resolved("32-true", AUTO, "Apple MPS")
    if caps.cpu_bf16:
        return Resolved("bf16-mixed", AUTO, f"CPU, {caps.cpu_words()}")
    return Resolved("32-true", AUTO, f"CPU, {caps.cpu_words()}")


def resolve_trainer(trainer: dict[str, Any], caps: Capabilities | None = None, warn: bool = True) -> tuple[dict[str, Any], Resolved]:
    """``trainer`` with its precision resolved (a copy), and the resolution; warns once if it must."""
    resolved = resolve_precision(trainer.get("precision", AUTO), trainer.get("accelerator", "auto"), caps)
    if warn and resolved.warning:
        warnings.warn(resolved.warning, PrecisionWarning, stacklevel=2)
    return {**trainer, "precision": resolved.precision}, resolved
