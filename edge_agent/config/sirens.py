"""The ``sirens:`` section: a siren or strobe on a relay, switched by alarms (issue 10).

A siren names a device of ``devices:`` and one of its on/off outputs (a Modbus coil the
profile marks writable); which alarms switch it on (default: critical ones); and
``max_on_s``, required: no siren rings for ever. The runtime is
:mod:`edge_agent.alarms.siren`; :func:`check_sirens` checks the device and the point
against the device's profile (``check-config`` prints each problem at its line).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from edge_agent.config.models import Id, Strict

Path_ = tuple[str | int, ...]
Severity = Literal["critical", "major", "minor", "warning"]

#: bounds of max_on_s: long enough for anyone to hear it, short enough that a siren
#: nobody acknowledges does not ring through the night (local noise rules)
MAX_ON_MIN_S = 5
MAX_ON_MAX_S = 1800


class SirenConfig(Strict):
    """A siren or strobe on one relay output."""

    id: Id = Field(description="Siren id, in logs and its fault alarm, e.g. 'gate-siren'")
    device: Id = Field(description="The relay module (its id in devices:) / 继电器模块设备")
    point: str = Field(
        min_length=1,
        max_length=64,
        description="The output the siren is wired to: a writable coil of the device's "
        "profile, e.g. 'relay1' / 声光报警器所接的输出点（可写线圈）",
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list[Severity](["critical"]),
        min_length=1,
        description="Alarm severities that switch it on / 触发的告警级别",
    )
    rules: list[str] = Field(
        default_factory=list,
        description="Only alarms of these rules (shell patterns such as 'door_*'); empty: "
        "every rule of those severities but the gateway's own (outbox_corrupt, "
        "outbox_disk_full, outbox_data_lost: named here to ring it) / 仅这些规则的告警"
        "（为空则不限，网关自身告警除外）",
    )
    max_on_s: float = Field(
        ge=MAX_ON_MIN_S,
        le=MAX_ON_MAX_S,
        description=f"Longest it rings, in seconds ({MAX_ON_MIN_S}-{MAX_ON_MAX_S}); then it "
        "stays off until a new matching alarm / 最长鸣响时间（秒），之后直到新告警才再次鸣响",
    )
    name: str | None = Field(default=None, description="Human-readable name / 名称")


def valid_sirens(cfg: Any, data: dict[str, Any]) -> list[tuple[int, SirenConfig]]:
    """Sirens that validate on their own, with their index (the others are reported by
    the whole model's validation)."""
    if cfg is not None:
        return list(enumerate(cfg.sirens))
    raw = data.get("sirens")
    out: list[tuple[int, SirenConfig]] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            out.append((i, SirenConfig.model_validate(item)))
        except ValidationError:
            pass
    return out


def check_sirens(
    sirens: list[tuple[int, SirenConfig]],
    devices: dict[str, Any],
    written: set[str],
    outputs_of: Any,
) -> list[tuple[Path_, str]]:
    """Each siren names a device of ``devices:`` and one of its switchable outputs; ids
    are unique and no output drives two sirens.

    ``devices``: the devices that validate, by id; ``written``: every id in the file;
    ``outputs_of(device)``: the device's switchable outputs, None when its driver cannot
    be built (reported at the device), or ``False`` when its kind has none."""
    from edge_agent.config.loader import close_match

    problems: list[tuple[Path_, str]] = []
    ids: dict[str, int] = {}
    used: dict[tuple[str, str], str] = {}
    for i, siren in sirens:
        path: Path_ = ("sirens", i)
        if siren.id in ids:
            problems.append(
                (
                    (*path, "id"),
                    f"duplicate siren id {siren.id!r} (first at sirens[{ids[siren.id]}])",
                )
            )
        ids.setdefault(siren.id, i)
        if siren.device not in devices:
            if siren.device in written:
                continue  # the device has its own problem, reported at its lines
            guess = close_match(siren.device, written)
            hint = f"did you mean {guess!r}?" if guess else f"devices: {', '.join(sorted(written))}"
            problems.append(
                ((*path, "device"), f"unknown device {siren.device!r} ({hint}) / 设备不存在")
            )
            continue
        outputs = outputs_of(siren.device)
        if outputs is None:
            continue
        if outputs is False or not outputs:
            problems.append(
                (
                    (*path, "device"),
                    f"device {siren.device!r} has no switchable output (a writable coil in "
                    "its profile) / 该设备没有可写的开关输出",
                )
            )
            continue
        if siren.point not in outputs:
            guess = close_match(siren.point, outputs)
            hint = f"did you mean {guess!r}?" if guess else f"outputs: {', '.join(outputs)}"
            problems.append(
                (
                    (*path, "point"),
                    f"{siren.point!r} is not a writable coil of {siren.device!r} ({hint}) "
                    "/ 该点不是可写线圈",
                )
            )
            continue
        key = (siren.device, siren.point)
        if key in used:
            problems.append(
                (
                    (*path, "point"),
                    f"{siren.device}.{siren.point} already drives siren {used[key]!r} "
                    "/ 输出点重复使用",
                )
            )
        used.setdefault(key, siren.id)
    return problems
