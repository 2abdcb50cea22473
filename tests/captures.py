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
