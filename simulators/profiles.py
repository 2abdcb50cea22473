"""Device profiles (register maps as data) read straight from ``drivers/modbus/profiles/*.yaml``.

The simulators share the *data* of a profile with the agent, never its code: this loader is
written here on purpose, so that a mistake in the agent's profile parsing is not repeated here.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Where the repository keeps its profiles (``<repo>/drivers/modbus/profiles``).
DEFAULT_PROFILES_DIR = Path(__file__).resolve().parent.parent / "drivers" / "modbus" / "profiles"

#: Registers taken by one value of each type (Modbus registers are 16 bits wide).
REGISTER_COUNT: dict[str, int] = {
    "bit": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}

_POINT_KEYS = {
    "name",
    "fc",
    "address",
    "type",
    "byte_order",
    "word_order",
    "bit",
    "scale",
    "offset",
    "unit",
    "description",
    "range",
    "writable",
    "report",
}


class ProfileError(ValueError):
    """A profile file that cannot be used by the simulators."""


@dataclass(frozen=True)
class Point:
    """One value of a device's register map."""

    name: str
    fc: int
    address: int
    type: str
    byte_order: str = "big"
    word_order: str = "big"
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    range: tuple[float, float] | None = None
    writable: bool = False
    report: bool = True

    @property
    def is_bit(self) -> bool:
        """True for coils (FC01), discrete inputs (FC02) and single bits of a register."""
        return self.type == "bit"

    @property
    def count(self) -> int:
        """Registers (or, for FC01/FC02, bits) the value occupies."""
        return REGISTER_COUNT[self.type]

    @property
    def addresses(self) -> builtins.range:
        """Register (or bit) addresses the value occupies."""
        return builtins.range(self.address, self.address + self.count)


@dataclass(frozen=True)
class Profile:
    """A device model: its name and its points."""

    model: str
    points: tuple[Point, ...]
    vendor: str = ""
    description: str = ""

    def point(self, name: str) -> Point:
        """Return the point called ``name``; ``KeyError`` if there is none."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(f"profile {self.model!r} has no point {name!r}")


def _point_from_dict(raw: dict[str, Any], where: str) -> Point:
    unknown = set(raw) - _POINT_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        name = str(raw["name"])
        fc = int(raw["fc"])
        address = int(raw["address"])
        type_ = str(raw["type"])
    except KeyError as err:
        raise ProfileError(f"{where}: missing key {err.args[0]!r}") from err
    if fc not in (1, 2, 3, 4):
        raise ProfileError(f"{where}: fc must be 1, 2, 3 or 4, not {fc}")
    if type_ not in REGISTER_COUNT:
        raise ProfileError(f"{where}: unknown type {type_!r}")
    if fc in (1, 2) and type_ != "bit":
        raise ProfileError(f"{where}: fc {fc} (coils/discrete inputs) needs type 'bit'")
    if not 0 <= address <= 0xFFFF - REGISTER_COUNT[type_] + 1:
        raise ProfileError(f"{where}: address {address} out of 0..65535")
    byte_order = str(raw.get("byte_order", "big"))
    word_order = str(raw.get("word_order", "big"))
    for label, order in (("byte_order", byte_order), ("word_order", word_order)):
        if order not in ("big", "little"):
            raise ProfileError(f"{where}: {label} must be 'big' or 'little'")
    bit = raw.get("bit")
    if bit is not None:
        bit = int(bit)
        if not 0 <= bit <= 15:
            raise ProfileError(f"{where}: bit must be 0..15")
    if type_ == "bit" and fc in (3, 4) and bit is None:
        raise ProfileError(f"{where}: a bit in a register needs 'bit'")
    scale = float(raw.get("scale", 1.0))
    if scale == 0 or not math.isfinite(scale):
        raise ProfileError(f"{where}: scale must be a finite non-zero number")
    range_raw = raw.get("range")
    value_range: tuple[float, float] | None = None
    if range_raw is not None:
        low, high = (float(v) for v in range_raw)
        if low > high:
            raise ProfileError(f"{where}: range min > max")
        value_range = (low, high)
    return Point(
        name=name,
        fc=fc,
        address=address,
        type=type_,
        byte_order=byte_order,
        word_order=word_order,
        bit=bit,
        scale=scale,
        offset=float(raw.get("offset", 0.0)),
        unit=str(raw.get("unit", "")),
        description=str(raw.get("description", "")),
        range=value_range,
        writable=bool(raw.get("writable", False)),
        report=bool(raw.get("report", True)),
    )


def profile_from_dict(raw: dict[str, Any], where: str = "<profile>") -> Profile:
    """Build a :class:`Profile` from parsed YAML; raise :class:`ProfileError` when unusable."""
    if not isinstance(raw, dict) or "model" not in raw or "points" not in raw:
        raise ProfileError(f"{where}: a profile needs 'model' and 'points'")
    points = tuple(
        _point_from_dict(p, f"{where}: points[{i}]") for i, p in enumerate(raw["points"])
    )
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ProfileError(f"{where}: duplicate point names")
    return Profile(
        model=str(raw["model"]),
        points=points,
        vendor=str(raw.get("vendor", "")),
        description=str(raw.get("description", "")),
    )


def load_profile(path: Path) -> Profile:
    """Read one profile file."""
    with path.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    return profile_from_dict(raw, str(path))


def load_profiles(directory: Path | str | None = None) -> dict[str, Profile]:
    """Read every ``*.yaml`` profile in ``directory``, keyed by model name."""
    folder = Path(directory) if directory is not None else DEFAULT_PROFILES_DIR
    profiles: dict[str, Profile] = {}
    for path in sorted(folder.glob("*.yaml")):
        profile = load_profile(path)
        profiles[profile.model] = profile
    return profiles
