"""The layout keeps its shape: the layers contract (import-linter) holds, no module grows past 400 lines and
no function past 60."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


def test_layers_contract_holds():
    """``.importlinter``: cli / trainer > submission > search > method > fit > data > config > base, and no
    import circles among the modules of a stage; an upward import, even inside a function, breaks it."""
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "agora").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 400} == {}


def test_no_function_over_60_lines():
    """Every function and method in agora/, nested ones included, from its ``def`` line to its last line
    (``end_lineno - lineno + 1``; decorators excluded: ``lineno`` is the ``def`` line)."""
    long = {}
    for path in sorted((ROOT / "agora").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
