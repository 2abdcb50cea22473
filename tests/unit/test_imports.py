"""The import names a wheel installs: only ``edge_agent`` (issue #7).

``drivers/`` and ``simulators/`` are folders of the repository, installed as
``edge_agent.drivers`` and ``edge_agent.simulators``. Importing them by their bare folder name
works only from a checkout, and there it loads a second copy of every module (two registries,
two caches): no code and no test may do it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

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


# -- the house's import rules (issue #8) ---------------------------------------------------
# Module groups, spelled once. Tools are what the command line offers besides running the
# agent; the runtime is everything a gateway runs under systemd.
TOOLS = {"edge_agent.__main__", "edge_agent.cli", "edge_agent.tools"}
MQTT = {"edge_agent.mqtt", "paho"}
OUTBOX = {"edge_agent.outbox"}
DRIVERS = {"edge_agent.drivers"}
SIMULATORS = {"edge_agent.simulators"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("drivers", "simulators"):
        parts.insert(0, "edge_agent")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (also inside functions), as an
    absolute name; ``from . import x`` gives ``package.x``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found |= {f"{prefix}.{a.name}" for a in node.names}
    return found


def _in(name: str, group: set[str]) -> bool:
    return any(name == g or name.startswith(g + ".") for g in group)


def _modules() -> dict[str, set[str]]:
    paths = [*ROOT.joinpath("edge_agent").glob("*.py"), *ROOT.joinpath("drivers").rglob("*.py")]
    paths += ROOT.joinpath("simulators").rglob("*.py")
    paths += ROOT.joinpath("edge_agent", "pipeline").rglob("*.py")
    paths += ROOT.joinpath("edge_agent", "notify").rglob("*.py")
    paths += ROOT.joinpath("edge_agent", "console").rglob("*.py")
    return {_module_name(p): _absolute_imports(p) for p in paths}


def _group(*groups: set[str], but: set[str] | None = None) -> Callable[[str], bool]:
    """A module name's test: in any of ``groups`` and not in ``but``."""
    union = set().union(*groups)
    return lambda name: _in(name, union) and not _in(name, but or set())


RULES = [
    (
        "a driver never knows MQTT, the outbox, the tools or the simulators",
        _group(DRIVERS),
        # edge_agent.link is the core's side of the DeviceLink (it holds the outbox): a
        # driver gets its link in run(link) and imports only edge_agent.driver
        _group(MQTT, OUTBOX, TOOLS, SIMULATORS, {"edge_agent.link"}),
    ),
    ("the publisher never knows a device protocol", _group(MQTT), _group(DRIVERS)),
    ("storage never calls the publisher", _group(OUTBOX), _group(MQTT)),
    (
        "the runtime never imports the tools or the simulators",
        _group({"edge_agent"}, but=TOOLS | DRIVERS | SIMULATORS),
        _group(TOOLS, SIMULATORS),
    ),
    (
        "the pipeline never knows MQTT, a device protocol or the tools",
        _group({"edge_agent.pipeline"}),
        _group(MQTT, DRIVERS, TOOLS, SIMULATORS),
    ),
    (
        "the robots (notify) never know MQTT, the outbox's class, a device protocol or the tools",
        _group({"edge_agent.notify"}),
        _group(MQTT, OUTBOX, DRIVERS, TOOLS, SIMULATORS),
    ),
    (
        "the console never knows MQTT, the outbox's class, a device protocol or the tools",
        _group({"edge_agent.console"}),
        _group(MQTT, OUTBOX, DRIVERS, TOOLS, SIMULATORS),
    ),
    (
        "simulators are written from the wire, never from the agent's code",
        _group(SIMULATORS),
        _group({"edge_agent"}, but=SIMULATORS),
    ),
]


@pytest.mark.parametrize(("rule", "who", "banned"), RULES, ids=[r[0] for r in RULES])
def test_import_rules(rule: str, who: Callable[[str], bool], banned: Callable[[str], bool]) -> None:
    modules = _modules()
    assert modules, "no modules found"
    broken = [
        f"{mod} imports {name}"
        for mod, names in sorted(modules.items())
        if who(mod)
        for name in sorted(names)
        if banned(name)
    ]
    assert not broken, rule + ":\n" + "\n".join(broken)
