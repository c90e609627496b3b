"""docs/architecture.md names every module of mmstream and of the bundled backends, so the map
a newcomer reads is the tree as it is."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> list[str]:
    found = [
        path.relative_to(ROOT / "mmstream").as_posix()
        for path in (ROOT / "mmstream").rglob("*.py")
        if path.name != "__init__.py" or path.parent == ROOT / "mmstream"
    ]
    found += [
        path.parent.relative_to(ROOT).as_posix()
        for path in (ROOT / "backends").glob("*/mmstream_*/__init__.py")
    ]
    return sorted(found)


def test_every_module_is_named_in_the_architecture_doc() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| `")]
    missing = []
    for module in modules():
        package, _, name = module.rpartition("/")
        # A row names a module with its package (`streams/_ids.py`) or, after the first
        # module of its package in the same cell, by its file name alone (`_admin.py`).
        rows = [
            row
            for row in table
            if f"`{module}`" in row or (package and package in row and f"`{name}`" in row)
        ]
        if not rows:
            missing.append(module)
    assert table and not missing, f"docs/architecture.md does not name: {missing}"
