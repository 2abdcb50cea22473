"""Device profiles: a device model's register map as data (``drivers/modbus/profiles/<name>.yaml``).

A profile says *where* each metric lives (function code, address, data type,
byte/word order) and *how* to turn raw registers into an engineering value
(``value = raw * scale + offset``). Installers choose a profile per device with
``profile: sdm630``; the driver never hard-codes a register map.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.config import yamlsrc

PointType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bit"]

#: 16-bit registers one value of each type occupies
REGISTER_COUNT: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
    "bit": 1,
}

#: profile names are file names: no path separators, no dots
PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Point(BaseModel):
    """One metric (or writable setting) of a device: where it lives and how to scale it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z0-9_]+$",
        max_length=64,
        description="Metric id in telemetry, e.g. 'co2' / 指标名",
    )
    fc: Literal[1, 2, 3, 4] = Field(
        description="Function code: 1 coils, 2 discrete inputs, 3 holding registers, "
        "4 input registers",
    )
    address: int = Field(ge=0, le=65535, description="Zero-based address (40001 / 30001 = 0)")
    type: PointType = Field(
        description="Data type: int16, uint16, int32, uint32, float32, float64 or bit",
    )
    byte_order: Literal["big", "little"] = Field(
        default="big",
        description="Byte order inside each 16-bit register ('little' = BADC)",
    )
    word_order: Literal["big", "little"] = Field(
        default="big",
        description="Register order of 32/64-bit values: 'big' = high word first (ABCD), "
        "'little' = low word first (CDAB)",
    )
    bit: int | None = Field(
        default=None,
        ge=0,
        le=15,
        description="Bit number (0 = least significant) for type 'bit' read from a register "
        "(fc 3/4)",
    )
    scale: float = Field(default=1, description="Engineering value = raw * scale + offset")
    offset: float = Field(default=0, description="Engineering value = raw * scale + offset")
    unit: str = Field(default="", description="Unit of the engineering value, e.g. 'ppm' / 单位")
    description: str = Field(
        default="", description="What the metric is, English / 中文 (optional)"
    )
    range: tuple[float, float] | None = Field(
        default=None,
        description="Valid [min, max] of the engineering value; outside it the reading is "
        "'uncertain', and writes outside it are refused",
    )
    writable: bool = Field(
        default=False,
        description="May be written with the device_write command (fc 1 or 3 only)",
    )
    report: bool = Field(
        default=True,
        description="Include in telemetry (false for settings such as the address)",
    )

    @property
    def count(self) -> int:
        """Registers (fc 3/4) or bits (fc 1/2) this point occupies."""
        if self.fc in (1, 2):
            return 1
        return REGISTER_COUNT[self.type]

    @property
    def end(self) -> int:
        """Last address this point occupies (inclusive)."""
        return self.address + self.count - 1

    @property
    def is_bit_fc(self) -> bool:
        """True for coils and discrete inputs (bit-addressed function codes)."""
        return self.fc in (1, 2)

    @model_validator(mode="after")
    def check_type_fits_fc(self) -> Point:
        if self.is_bit_fc and self.type != "bit":
            raise ValueError(f"fc {self.fc} (coils/discrete inputs) requires type 'bit'")
        if self.type == "bit" and not self.is_bit_fc and self.bit is None:
            raise ValueError("type 'bit' on a register (fc 3/4) needs 'bit: 0..15'")
        if self.bit is not None and (self.type != "bit" or self.is_bit_fc):
            raise ValueError("'bit' is only for type 'bit' read from a register (fc 3/4)")
        if self.end > 65535:
            raise ValueError(f"address {self.address} + {self.count} registers passes 65535")
        return self

    @model_validator(mode="after")
    def check_scale(self) -> Point:
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError("scale must be finite and non-zero, offset finite")
        if self.type == "bit" and (self.scale != 1 or self.offset != 0):
            raise ValueError("type 'bit' cannot have scale or offset")
        return self

    @model_validator(mode="after")
    def check_range(self) -> Point:
        if self.range is not None:
            low, high = self.range
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"range {list(self.range)} must be finite [min, max]")
            if self.type == "bit":
                raise ValueError("type 'bit' cannot have a range")
        return self

    @model_validator(mode="after")
    def check_writable(self) -> Point:
        if self.writable and self.fc not in (1, 3):
            raise ValueError(
                f"only fc 1 (coils) or 3 (holding registers) can be writable, not fc {self.fc}"
            )
        if self.writable and self.type == "bit" and self.fc == 3:
            # a bit inside a holding register would need read-modify-write, which races with
            # the device's own updates of the other bits; use a coil or the whole register
            raise ValueError("a bit inside a holding register cannot be writable; use fc 1 (coil)")
        return self


class Profile(BaseModel):
    """A device model's register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model id, e.g. 'sdm630' / 型号")
    vendor: str = Field(description="Manufacturer, e.g. 'Eastron' / 厂家")
    description: str = Field(default="", description="What the device is, English / 中文")
    default_interval_s: float = Field(
        default=30,
        gt=0,
        le=86400,
        description="Poll interval when the device config sets none",
    )
    points: list[Point] = Field(min_length=1, description="Metrics and settings of the device")

    @model_validator(mode="after")
    def check_duplicate_names(self) -> Profile:
        seen: set[str] = set()
        for point in self.points:
            if point.name in seen:
                raise ValueError(f"duplicate point name '{point.name}'")
            seen.add(point.name)
        return self

    @model_validator(mode="after")
    def check_overlapping_registers(self) -> Profile:
        # several bit points may share one register (status words); any other overlap is a
        # typo in the map that would silently report the same bytes under two names
        for i, p in enumerate(self.points):
            for q in self.points[i + 1 :]:
                if p.fc != q.fc or p.address > q.end or q.address > p.end:
                    continue
                both_bits = p.type == "bit" and q.type == "bit"
                same_bit = p.address == q.address and (p.is_bit_fc or p.bit == q.bit)
                if not both_bits or same_bit:
                    raise ValueError(
                        f"points '{p.name}' and '{q.name}' overlap at fc {p.fc} address "
                        f"{max(p.address, q.address)}; only bit points may share a register, "
                        f"and never the same bit",
                    )
        return self

    def reported(self) -> list[Point]:
        """Points that go into telemetry."""
        return [p for p in self.points if p.report]

    def point(self, name: str) -> Point | None:
        """The point called ``name``, or None."""
        for p in self.points:
            if p.name == name:
                return p
        return None


class ProfileNotFound(yamlsrc.KeyProblem):
    """No ``<name>.yaml`` in any profile folder (or the name cannot be a file name)."""

    key = "profile"


class ProfileError(yamlsrc.FileProblems):
    """A profile file that cannot be used. ``problems`` holds one
    ``file:line  key.path  message`` line per problem, at the profile's own lines."""


def builtin_profiles() -> Path:
    """The folder of the shipped profiles: package data of this package, so a wheel
    carries them; found through importlib.resources, wherever the package is installed."""
    return Path(str(files(__package__ or "edge_agent.drivers.modbus").joinpath("profiles")))


def search_dirs(extra: list[str], config_dir: Path | None) -> list[str]:
    """Folders searched for profiles, first match wins: ``extra`` (the config's
    ``profile_dirs``, relative to ``config_dir``), ``profiles/`` next to the config file
    when it exists, then the shipped ones."""
    base = (config_dir or Path.cwd()).resolve()
    dirs = [str((base / d).resolve()) for d in extra]
    if config_dir is not None:
        own = base / "profiles"
        if own.is_dir():
            dirs.append(str(own))
    dirs.append(str(builtin_profiles()))
    return list(dict.fromkeys(dirs))


def load_profile(name: str, dirs: list[str] | tuple[str, ...]) -> Profile:
    """Load profile ``name`` from the first of ``dirs`` that holds ``<name>.yaml``.

    Raises :class:`ProfileNotFound` naming the directories searched (and the closest
    name there, for a typo), or :class:`ProfileError` with every problem of the file at
    its line. Both are ``ValueError``. Results are cached per ``(name, dirs)``; profiles
    are immutable.
    """
    return _load_profile_cached(name, tuple(dirs))


def available_profiles(dirs: list[str] | tuple[str, ...]) -> list[str]:
    """Names of the profiles in ``dirs`` (what ``profile:`` may say)."""
    names: set[str] = set()
    for directory in dirs:
        d = Path(directory)
        if d.is_dir():
            names.update(
                p.stem for p in d.glob("*.yaml") if re.fullmatch(PROFILE_NAME_PATTERN, p.stem)
            )
    return sorted(names)


@functools.lru_cache(maxsize=128)
def _load_profile_cached(name: str, dirs: tuple[str, ...]) -> Profile:
    if not re.fullmatch(PROFILE_NAME_PATTERN, name):
        raise ProfileNotFound(
            f"profile name {name!r} is not valid: use lower-case letters, digits, '_' or '-' "
            f"/ 设备模板名只能包含小写字母、数字、下划线和连字符",
        )
    for directory in dirs:
        path = Path(directory) / f"{name}.yaml"
        if path.is_file():
            return _parse(path)
    searched = ", ".join(dirs) or "(none)"
    close = difflib.get_close_matches(name, available_profiles(dirs), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    hint_zh = f"，是否应为 {close[0]}？" if close else ""
    raise ProfileNotFound(
        f"profile '{name}' not found: no {name}.yaml in {searched}{hint} "
        f"/ 找不到设备模板 {name}.yaml{hint_zh}",
    )


def _parse(path: Path) -> Profile:
    try:
        raw, lines = yamlsrc.load(path)
    except OSError as err:
        raise ProfileError(
            path, [f"{path}:1  (file)  cannot read profile / 无法读取设备模板: {err.strerror}"]
        ) from err
    except yamlsrc.SourceError as err:
        raise ProfileError(
            path,
            [
                f"{path}:{err.line}  {err.where}  cannot read profile / 无法读取设备模板: "
                f"{err.message}"
            ],
        ) from err
    if not isinstance(raw, dict):
        raise ProfileError(
            path, [f"{path}:1  (top)  a profile must be a mapping with model, vendor and points"]
        )
    # "x-" keys hold YAML anchors shared by several points, as in the agent config
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        return Profile.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            loc = tuple(e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                fields = Point.model_fields if loc[:1] == ("points",) else Profile.model_fields
                close = difflib.get_close_matches(str(loc[-1]), sorted(fields), n=1, cutoff=0.6)
                msg = (
                    f"unknown key; did you mean {close[0]!r}? / 未知的配置项，是否应为 {close[0]}？"
                    if close
                    else "unknown key (typo?) / 未知的配置项"
                )
            problems.append((lines.line(loc), f"{_loc(raw, loc)}  {msg}"))
        problems.sort(key=lambda pr: pr[0])
        raise ProfileError(path, [f"{path}:{line}  {text}" for line, text in problems]) from err


def _loc(raw: dict[str, object], loc: tuple[int | str, ...]) -> str:
    """Render ``('points', 3, 'fc')`` as ``points[3](co2).fc`` so the installer finds the line."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            points = raw.get("points")
            if loc[:i] == ("points",) and isinstance(points, list) and part < len(points):
                entry = points[part]
                if isinstance(entry, dict) and "name" in entry:
                    out += f"({entry['name']})"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def clear_profile_cache() -> None:
    """Forget cached profiles (after a config reload, or between tests)."""
    _load_profile_cached.cache_clear()
