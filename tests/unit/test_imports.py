"""The import names a wheel installs: only ``edge_agent`` (issue #7).

``drivers/`` and ``simulators/`` are folders of the repository, installed as
``edge_agent.drivers`` and ``edge_agent.simulators``. Importing them by their bare folder name
works only from a checkout, and there it loads a second copy of every module (two registries,
two caches): no code and no test may do it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERIC = ("drivers", "simulators")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_code_imports_a_generic_top_level_name() -> None:
    bad = []
    for folder in ("edge_agent", "drivers", "simulators", "tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "edge_agent" / "drivers") or path.is_relative_to(
                ROOT / "edge_agent" / "simulators"
            ):
                continue  # the links to the real folders, read once through those
            for line, name in _imports(path):
                if name.split(".")[0] in GENERIC:
                    bad.append(f"{path.relative_to(ROOT)}:{line}  import {name}")
    assert not bad, "\n".join(bad)


def test_the_package_reaches_the_repository_folders() -> None:
    import edge_agent.drivers.modbus
    import edge_agent.simulators

    assert Path(edge_agent.drivers.modbus.__file__).resolve().parent == ROOT / "drivers" / "modbus"
    assert Path(edge_agent.simulators.__file__).resolve().parent == ROOT / "simulators"
