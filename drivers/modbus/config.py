"""Configuration of one Modbus device (``kind: modbus``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge_agent.config.models import Id, PollingDeviceBase, Strict
from edge_agent.drivers.modbus.profile import PROFILE_NAME_PATTERN


def unit_range(*, direct_tcp: bool) -> range:
    """Unit ids a device can answer on: any byte for Modbus TCP reached directly; 1-247
    for RTU frames (0 is the broadcast address, which no device answers)."""
    return range(0, 256) if direct_tcp else range(1, 248)


class ModbusSettings(Strict):
    """Settings of the Modbus kind as a whole: top-level keys of the config file."""

    profile_dirs: list[str] = Field(
        default_factory=list,
        description="Extra folders with device profiles (relative to this file); "
        "the shipped profiles always load",
    )


class ModbusDevice(PollingDeviceBase):
    """A Modbus RTU or TCP device read through a profile (register map).

    Either ``bus:`` names a line from the top-level ``buses:`` (an RS-485 port or a
    serial server shared by several devices), or ``host:`` reaches a Modbus TCP
    device directly.
    """

    kind: Literal["modbus"] = Field(description="'modbus'")
    profile: str = Field(
        pattern=PROFILE_NAME_PATTERN,
        description="Profile (register map) name: a shipped or own <profile>.yaml, e.g. 'sdm630'",
    )
    bus: Id | None = Field(
        default=None,
        description="Id of a bus in 'buses:' (RS-485 line or serial server)",
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        description="Host name or IP of a Modbus TCP device (instead of 'bus:')",
    )
    port: int = Field(default=502, ge=1, le=65535, description="TCP port (with 'host:')")
    framer: Literal["socket", "rtu"] = Field(
        default="socket",
        description="With 'host:': 'socket' = Modbus TCP, 'rtu' = RTU frames over TCP",
    )
    # after bus/host/port/framer: its validator needs them to know which rule applies
    unit: int = Field(
        default=1,
        description="Modbus unit (slave) id of the device: 1-247 on RS-485 and behind serial "
        "servers; 0-255 for a Modbus TCP device reached with 'host:' (many answer on 1 or "
        "255) / 从站地址",
    )
    max_registers: int = Field(
        default=125,
        ge=1,
        le=125,
        description="Most registers in one read request (lower it for devices that refuse long "
        "reads)",
    )
    max_gap: int = Field(
        default=16,
        ge=0,
        le=124,
        description="Most unused registers read between two points to save a request (0 = none)",
    )
    scale_overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Replace a metric's scale from the profile, e.g. CT ratio: "
        "{current_l1: 0.4, power_total: 0.04, energy_total: 0.4} for a 200/5 A CT on an "
        "ADL400 (profile scale x 40; scale every secondary-side value); its range scales too",
    )

    @model_validator(mode="after")
    def check_bus_or_host(self) -> ModbusDevice:
        if (self.bus is None) == (self.host is None):
            raise ValueError("set exactly one of 'bus' or 'host' / 'bus' 与 'host' 二选一")
        if self.bus is not None and {"port", "framer"} & self.model_fields_set:
            raise ValueError("'port' and 'framer' belong to the bus when 'bus' is set")
        return self

    @field_validator("unit")
    @classmethod
    def check_unit(cls, unit: int, info: ValidationInfo) -> int:
        # One message with the whole rule: an installer told only "at most 255" fixes
        # 300 to 250, then learns about 1-247 on the next try.
        direct_tcp = info.data.get("host") is not None and info.data.get("framer") == "socket"
        if unit not in unit_range(direct_tcp=direct_tcp):
            raise ValueError(
                f"unit {unit} is out of range: RTU devices (on an RS-485 bus or behind a serial "
                "server) answer on 1-247 (0 is the broadcast address, which no device answers); "
                "0-255 only for a Modbus TCP device reached directly with 'host:' / "
                f"从站地址 {unit} 超出范围：RS-485 总线上或串口服务器后的 RTU 设备为 1-247"
                "（0 为广播地址，设备不会应答）；仅用 host: 直连的 Modbus TCP 设备可用 0-255"
            )
        return unit

    @model_validator(mode="after")
    def check_timeout(self) -> ModbusDevice:
        if self.interval_s is not None and self.timeout_s * (self.retries + 1) >= self.interval_s:
            raise ValueError(
                f"timeout_s * (retries + 1) = {self.timeout_s * (self.retries + 1):g} s must be "
                f"less than interval_s = {self.interval_s:g} s",
            )
        return self

    @model_validator(mode="after")
    def check_scale_overrides(self) -> ModbusDevice:
        for name, scale in self.scale_overrides.items():
            if scale == 0 or scale != scale or abs(scale) == float("inf"):
                raise ValueError(f"scale_overrides.{name}: scale must be finite and non-zero")
        return self

    @property
    def bus_id(self) -> str:
        """The bus this device's requests go through (``tcp:{host}:{port}`` for direct TCP)."""
        if self.bus is not None:
            return self.bus
        return f"tcp:{self.host}:{self.port}"
