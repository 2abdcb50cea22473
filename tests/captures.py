"""The third-party device captures in ``../shared/fixtures/`` (beside the repository).

They are read at test time and never copied into the project (several are GPL-3.0). Where
the folder is absent (a clone outside the steering checkout) the tests that need them skip
and say why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ACCESS = REPO.parent / "shared" / "fixtures" / "access"


def path(name: str) -> Path:
    """``../shared/fixtures/access/<name>``, whether it exists or not."""
    return ACCESS / name


def absent(name: str) -> str:
    return (
        f"shared access fixtures absent ({path(name)}): they live beside the repository, "
        "in the steering checkout's shared/ folder"
    )


def load(name: str) -> list[Any]:
    """The cases of one capture file; skips the calling test when the folder is absent."""
    if not path(name).is_file():
        pytest.skip(absent(name))
    cases: list[Any] = json.loads(path(name).read_text("utf-8"))
    return cases


def params(name: str) -> list[Any]:
    """One ``pytest.param`` per case (id: its name), or one skipped param when absent."""
    if not path(name).is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent(name)), id="absent")]
    return [pytest.param(c, id=c["name"]) for c in load(name)]


ONVIF = REPO.parent / "shared" / "fixtures" / "onvif"


def onvif_cases() -> list[dict[str, Any]]:
    """``../shared/fixtures/onvif/cases.json`` (one record per XML file, with what the XML
    says in ``expected``); skips the calling test when the folder is absent."""
    index = ONVIF / "cases.json"
    if not index.is_file():
        pytest.skip(absent_onvif())
    cases: list[dict[str, Any]] = json.loads(index.read_text("utf-8"))
    return cases


def absent_onvif() -> str:
    return (
        f"shared ONVIF fixtures absent ({ONVIF}): they live beside the repository, "
        "in the steering checkout's shared/ folder"
    )


def onvif_xml(name: str) -> bytes:
    """The bytes of one ONVIF capture; skips the calling test when it is absent."""
    if not (ONVIF / name).is_file():
        pytest.skip(absent_onvif())
    return (ONVIF / name).read_bytes()


def onvif_params(names: list[str]) -> list[Any]:
    """One ``pytest.param`` per capture file name, or one skipped param when absent."""
    if not (ONVIF / "cases.json").is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent_onvif()), id="absent")]
    return [pytest.param(n, id=n.removesuffix(".xml")) for n in names]


def onvif_kind_params(kind: str) -> list[Any]:
    """One ``pytest.param((case, xml bytes))`` per ONVIF capture of ``kind`` (its
    ``cases.json`` kind: ``getcapabilities``, ``fault`` ...), or one skipped param when
    ``../shared/fixtures/onvif/`` is absent."""
    index = ONVIF / "cases.json"
    if not index.is_file():
        reason = f"shared ONVIF fixtures absent ({ONVIF}): they live beside the repository"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    cases = json.loads(index.read_text("utf-8"))
    return [
        pytest.param((c, (ONVIF / c["file"]).read_bytes()), id=c["file"])
        for c in cases
        if c["kind"] == kind
    ]
