"""The bootstrap compiles our own packages' bytecode, as installing a package would.

The editable installs leave mmstream and the built-in backends without ``.pyc`` files, and
under ``PYTHONDONTWRITEBYTECODE`` (set on this kind of machine) every server start then
compiles every module, leaving garbage in the heap for the process's life
(docs/fanout.md, "Memory per listener"). So the Makefile compiles them in the runtime install,
and each command that starts a server refreshes what changed since. Checked on ``make``'s dry
run: the recipes are what the bootstrap runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Our packages, as the Makefile names them: the core and every built-in backend.
PACKAGES = ["mmstream", *(f"{p.parent.relative_to(ROOT)}/" for p in sorted(
    ROOT.glob("backends/*/mmstream_*/__init__.py")))]  # fmt: skip


def _compile_lines(target: str) -> list[list[str]]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run([make, "-n", "-B", target], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)  # fmt: skip
    return [line.split() for line in result.stdout.splitlines() if "compileall" in line]


@pytest.mark.parametrize("target", [".venv/.runtime", "serve", "cluster", "bench-fanout"])
def test_installing_and_starting_a_server_compile_our_packages(target: str) -> None:
    lines = _compile_lines(target)
    assert lines, f"`make {target}` compiles no bytecode"
    words = lines[-1]
    assert words[words.index("-m") + 1] == "compileall"
    assert len(PACKAGES) > 1
    assert [p for p in PACKAGES if p not in words] == []
