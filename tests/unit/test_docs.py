"""The docs stay true: the config reference is generated from the models, links resolve.

* ``docs/configuration.md`` must equal what ``scripts/gen_config_docs.py`` renders now, so a
  new or changed config field cannot ship with a stale reference.
* Every relative link in ``README.md`` and ``docs/*.md`` points to a file that exists, and
  every ``#fragment`` to a heading or ``<a id>`` in the target page.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def _generator() -> ModuleType:
    path = REPO / "scripts" / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_docs", module)
    spec.loader.exec_module(module)
    return module


gen = _generator()


# -- the generated reference ------------------------------------------------------------


def test_configuration_doc_is_up_to_date() -> None:
    current = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == gen.render(), (
        "docs/configuration.md is stale: run `python scripts/gen_config_docs.py` and commit it"
    )


def test_every_config_and_profile_key_has_a_row() -> None:
    text = gen.render()
    sections = [*gen.config_sections(), *gen.profile_sections()]
    assert {s.model.__name__ for s in sections} >= {
        "AgentConfig",  # AgentConfigBase plus the kinds' Settings keys
        "SiteConfig",
        "MqttConfig",
        "TlsConfig",
        "SerialBus",
        "TcpBus",
        "ModbusDevice",
        "Location",
        "Profile",
        "Point",
    }
    for section in sections:
        for name in section.model.model_fields:
            assert f"| `{name}` |" in text, f"{section.path or 'top level'}: no row for {name}"
    assert "| `devices` |" in text  # added to the model at run time, documented by hand


def test_rows_show_type_default_and_description() -> None:
    text = gen.render()
    assert (
        "| `max_gap` | integer, 0–124 | `16` | Most unused registers read between two points"
        in text
    )
    assert "| `parity` | one of `N`, `E`, `O` | `N` | Parity: N, E or O |" in text
    assert "| `site` | mapping ([site](#site)) | **required** |" in text


def test_check_mode_fails_on_a_stale_file_and_passes_on_a_fresh_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "configuration.md"
    out.write_text(gen.render().replace("`16`", "`17`"), encoding="utf-8")
    assert gen.main(["--check", "--output", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert gen.main(["--output", str(out)]) == 0
    assert gen.main(["--check", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == gen.render()


# -- links ------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
# link text may hold one level of brackets: [devices[] (kind: modbus)](#devices-kind-modbus)
_INLINE_LINK = re.compile(
    r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
_HTML_ID = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _links(text: str) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"<[^>]+>", "", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    text = _FENCE.sub("", text)
    found = set(_HTML_ID.findall(text))
    counts: dict[str, int] = {}
    for heading in _HEADING.findall(text):
        slug = _slug(heading)
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) is not None


def test_link_checker_sees_links_and_skips_code() -> None:
    text = (
        "See [a](docs/a.md), [b `c`](../b.md#x), [devices[] (kind)](#d) and [e][1].\n"
        "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n"
        "1. a list item\n\n   ```text\n   points[4](operating_hours)\n   ```\n"
        "[1]: https://example.com\n"
    )
    assert _links(text) == ["docs/a.md", "../b.md#x", "#d", "https://example.com"]
    assert _anchors("## Health / 运行状态\n## Health / 运行状态\n") == {
        "health--运行状态",
        "health--运行状态-1",
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(doc: Path) -> None:
    broken = []
    for target in _links(doc.read_text(encoding="utf-8")):
        if _is_external(target):
            continue
        path_part = target.partition("#")[0]
        if path_part and not (doc.parent / path_part).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links to missing files: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_fragments_point_to_existing_anchors(doc: Path) -> None:
    broken = []
    for target in _links(doc.read_text(encoding="utf-8")):
        path_part, _, fragment = target.partition("#")
        if _is_external(target) or not fragment:
            continue
        page = (doc.parent / path_part) if path_part else doc
        if page.suffix != ".md" or not page.is_file():
            continue  # a missing file is reported by the test above
        if fragment not in _anchors(page.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links to missing anchors: {broken}"
