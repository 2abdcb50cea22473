"""Loading the agent's YAML configuration, with errors an installer can act on.

Every problem is reported as ``file:line  key.path  message``, all at once, so
``edge-agent check-config`` and a refused start print the same list. Secrets
(MQTT password, TLS key passphrase, the pseudonym secret) are never literal in
the YAML: they are ``${ENV_NAME}`` or ``${cred:NAME}`` (a file in
``$CREDENTIALS_DIRECTORY``, systemd ``LoadCredential=``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model

from . import registry
from .config_models import (
    BusConfig,
    CommandsConfig,
    MqttConfig,
    OutboxConfig,
    SiteConfig,
    Strict,
)
from .errors import ConfigError

#: Shipped profiles (config/profiles next to the package in a source checkout or wheel data).
BUILTIN_PROFILES = Path(__file__).resolve().parent.parent / "config" / "profiles"

SECRET_FIELDS: tuple[tuple[str, ...], ...] = (
    ("mqtt", "password"),
    ("mqtt", "tls", "key_password"),
    ("site", "pseudonym_secret"),
    ("commands", "key"),
)

Path_ = tuple[str | int, ...]


class LoggingConfig(Strict):
    """Logging to stderr (journald under systemd)."""

    level: str = Field(
        default="INFO",
        pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="DEBUG, INFO, WARNING or ERROR",
    )


class ClockConfig(Strict):
    """How the agent learns that the system clock is right (a Pi has no RTC)."""

    sync_check: Literal["adjtimex", "timesyncd", "file", "none"] = Field(
        default="adjtimex",
        description="'adjtimex': ask the kernel (works with chrony, ntpd, timesyncd); "
        "'timesyncd': /run/systemd/timesync/synchronized exists; 'file': sync_file exists "
        "(touched by your own NTP/GPS hook); 'none': trust the clock (RTC/GPS)",
    )
    sync_file: str = Field(
        default="/run/systemd/timesync/synchronized",
        min_length=1,
        description="With sync_check 'file': the clock counts as synchronised while "
        "this file exists",
    )
    hold_max_s: float = Field(
        default=120,
        ge=0,
        le=86400,
        description="Hold readings this long waiting for clock sync; then send them "
        "with quality 'uncertain'",
    )


class PublishConfig(Strict):
    """How the backlog drains after an outage."""

    backlog_rate_max: float = Field(
        default=0,
        ge=0,
        description="Most backlog messages per second after a reconnect; "
        "0 = as fast as the in-flight window allows",
    )


class AgentConfigBase(Strict):
    """The whole file, less ``devices`` (whose kinds come from the driver registry)."""

    site: SiteConfig = Field(description="The school and this gateway")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Uplink broker")
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="Store-and-forward database"
    )
    publish: PublishConfig = Field(default_factory=PublishConfig, description="Backlog draining")
    clock: ClockConfig = Field(default_factory=ClockConfig, description="Clock synchronisation")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log level")
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, description="Command signing, queues and deadlines"
    )
    profile_dirs: list[str] = Field(
        default_factory=list,
        description="Extra folders with device profiles (relative to this file); "
        "the shipped profiles always load",
    )
    buses: list[BusConfig] = Field(
        default_factory=list, description="Serial lines and shared TCP endpoints"
    )


_model_cache: dict[tuple[str, ...], type[AgentConfigBase]] = {}


def config_model() -> type[AgentConfigBase]:
    """The full config model with ``devices`` as a union discriminated on ``kind``."""
    kinds = registry.drivers()
    key = tuple(sorted(kinds))
    if key in _model_cache:
        return _model_cache[key]
    configs = tuple(cls.Config for cls in kinds.values())
    device_type: Any
    if len(configs) == 1:
        device_type = configs[0]
    else:
        device_type = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007
    model = create_model(
        "AgentConfig",
        __base__=AgentConfigBase,
        devices=(list[device_type], Field(default_factory=list, description="Devices to read")),
    )
    _model_cache[key] = model
    return model


# -- YAML with line numbers --------------------------------------------------------------
class _Lines:
    """Maps key paths to the line where that key (or list item) starts."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}

    def walk(self, node: yaml.Node, path: Path_) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = key.value
                self.lines[(*path, k)] = key.start_mark.line + 1
                self.walk(value, (*path, k))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                self.walk(item, (*path, i))

    def line(self, path: Path_) -> int:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor) stay usable
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def fmt_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


def _clean_loc(data: Any, loc: tuple[Any, ...]) -> Path_:
    """Drop the union tags pydantic puts into error locations (``devices.0.modbus.unit``)."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        if (
            isinstance(cur, dict)
            and isinstance(part, str)
            and part not in cur
            and (cur.get("kind") == part or cur.get("type") == part)
        ):
            continue
        out.append(part)
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            cur = None
    return tuple(out)


def _resolve_secrets(
    data: dict[str, Any], problems: list[tuple[Path_, str]], notes: list[tuple[Path_, str]] | None
) -> None:
    """Replace secret references by their values. With ``notes`` (check-config on a
    laptop), a reference that cannot be resolved here is a note, not an error."""
    from .secrets import SecretError, is_reference, resolve

    for path in SECRET_FIELDS:
        parent: Any = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or parent.get(path[-1]) is None:
            continue
        value = parent[path[-1]]
        if not isinstance(value, str) or not is_reference(value):
            problems.append(
                (
                    path,
                    "secrets must not be written in the file: use ${ENV_NAME} or "
                    "${cred:NAME} / 密钥不能明文写在配置文件里",
                )
            )
            continue
        try:
            parent[path[-1]] = resolve(value, cred_dir=os.environ.get("CREDENTIALS_DIRECTORY"))
        except SecretError as err:
            if notes is None:
                problems.append((path, str(err)))
            else:
                notes.append((path, f"not available on this machine, needed at run time: {err}"))
                parent[path[-1]] = "<unresolved>"


# -- cross-field checks --------------------------------------------------------------
def check_kinds(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """Name the unknown kind, and the known ones, instead of a union error per field."""
    problems: list[tuple[Path_, str]] = []
    devices = data.get("devices")
    if not isinstance(devices, list):
        return problems
    known = registry.drivers()
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict) or "kind" not in dev or dev["kind"] in known:
            continue
        kind = dev["kind"]
        why = registry.unavailable.get(str(kind))
        msg = (
            f"driver kind {kind!r} is disabled: {why}"
            if why
            else f"unknown kind {kind!r} (known: {', '.join(sorted(known))}) / 未知的设备类型"
        )
        problems.append((("devices", i, "kind"), msg))
    return problems


Indexed = list[tuple[int, Any]]


def _raw_ids(data: dict[str, Any], section: str) -> set[str]:
    """The ids written in a section, valid items or not (a bus with a typo in its
    parity still exists: a device naming it must not also get "unknown bus")."""
    items = data.get(section)
    if not isinstance(items, list):
        return set()
    return {str(it["id"]) for it in items if isinstance(it, dict) and "id" in it}


def valid_items(data: dict[str, Any]) -> tuple[Indexed, Indexed]:
    """Buses and devices that validate on their own, with their index in the file, so
    the cross-field checks can run even when something else in the file is wrong."""
    from pydantic import TypeAdapter

    buses: Indexed = []
    raw_buses = data.get("buses")
    if isinstance(raw_buses, list):
        adapter: TypeAdapter[Any] = TypeAdapter(BusConfig)
        for i, bus in enumerate(raw_buses):
            try:
                buses.append((i, adapter.validate_python(bus)))
            except ValidationError:
                pass
    devices: Indexed = []
    raw_devices = data.get("devices")
    known = registry.drivers()
    if isinstance(raw_devices, list):
        for i, dev in enumerate(raw_devices):
            if not isinstance(dev, dict) or dev.get("kind") not in known:
                continue
            try:
                devices.append((i, known[dev["kind"]].Config.model_validate(dev)))
            except ValidationError:
                pass
    return buses, devices


def check_unique_ids(buses: Indexed, devices: Indexed) -> list[tuple[Path_, str]]:
    """Device ids are topic levels: two devices with one id would mix their data."""
    problems: list[tuple[Path_, str]] = []
    seen: dict[str, int] = {}
    for i, dev in devices:
        if dev.id in seen:
            problems.append(
                (
                    ("devices", i, "id"),
                    f"duplicate device id {dev.id!r} (first at devices[{seen[dev.id]}])",
                )
            )
        else:
            seen[dev.id] = i
    bus_seen: dict[str, int] = {}
    for i, bus in buses:
        if bus.id in bus_seen:
            problems.append((("buses", i, "id"), f"duplicate bus id {bus.id!r}"))
        bus_seen[bus.id] = i
    return problems


def check_bus_references(bus_ids: set[str], devices: Indexed) -> list[tuple[Path_, str]]:
    """A device's ``bus:`` must name a bus in ``buses:``; one unit id per bus."""
    problems: list[tuple[Path_, str]] = []
    units: dict[tuple[str, int], str] = {}
    for i, dev in devices:
        bus = getattr(dev, "bus", None)
        if bus is not None and bus not in bus_ids:
            known = ", ".join(sorted(bus_ids)) or "none defined"
            problems.append((("devices", i, "bus"), f"unknown bus {bus!r} (buses: {known})"))
        line = (
            bus
            if bus is not None
            else (
                f"tcp:{getattr(dev, 'host', '')}:{getattr(dev, 'port', '')}"
                if getattr(dev, "host", None)
                else None
            )
        )
        unit = getattr(dev, "unit", None)
        if line is not None and unit is not None and dev.enabled:
            if (line, unit) in units:
                problems.append(
                    (
                        ("devices", i, "unit"),
                        f"unit {unit} on {line} is already used by {units[(line, unit)]!r}",
                    )
                )
            else:
                units[(line, unit)] = dev.id
    return problems


def check_drivers_build(devices: Indexed, dirs: list[str]) -> list[tuple[Path_, str]]:
    """Build each device's driver once (no I/O): catches unknown profiles and points."""
    from .driver import DriverContext

    problems: list[tuple[Path_, str]] = []
    ctx = DriverContext(buses={}, profile_dirs=dirs)
    kinds = registry.drivers()
    for i, dev in devices:
        try:
            kinds[dev.kind](dev, ctx)
        except (ValueError, KeyError, OSError) as err:
            problems.append((("devices", i), str(err)))
    return problems


def profile_dirs(extra: list[str], path: Path) -> list[str]:
    """Folders searched for profiles: the file's own ``profiles/``, ``extra`` (the config's
    ``profile_dirs``), then the shipped ones."""
    base = path.resolve().parent
    dirs = [str((base / d).resolve()) for d in extra]
    own = base / "profiles"
    if own.is_dir():
        dirs.append(str(own))
    dirs.append(str(BUILTIN_PROFILES))
    return list(dict.fromkeys(dirs))


def load_config(
    path: str | os.PathLike[str], *, build_drivers: bool = True, notes: list[str] | None = None
) -> AgentConfigBase:
    """Load, validate and check a config file. Raises :class:`ConfigError` with every problem.

    With ``notes`` (a list to fill), secrets that cannot be resolved on this machine
    are reported there instead of failing: ``check-config`` on a laptop.
    """
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{name}:1  (file)  cannot read: {err.strerror or err}"]) from err
    lines = _Lines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{name}:{line}  (yaml)  {err.problem or err}"]) from err
    except yaml.YAMLError as err:
        raise ConfigError([f"{name}:1  (yaml)  {err}"]) from err
    if node is not None:
        lines.walk(node, ())
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{name}:1  (top)  the file must be a mapping with site:, mqtt:, devices: ..."]
        )

    # A section whose keys are all commented out is null in YAML: same as absent.
    for section in ("mqtt", "outbox", "publish", "logging", "clock"):
        if section in data and data[section] is None:
            del data[section]
    problems: list[tuple[Path_, str]] = []
    secret_notes: list[tuple[Path_, str]] | None = [] if notes is not None else None
    _resolve_secrets(data, problems, secret_notes)
    problems += check_kinds(data)
    bad_devices = {p_[1] for p_, _ in problems if p_[:1] == ("devices",)}
    model = config_model()
    cfg: AgentConfigBase | None = None
    try:
        cfg = model.model_validate(data)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            loc = _clean_loc(data, tuple(e["loc"]))
            if loc[:1] == ("devices",) and len(loc) > 1 and loc[1] in bad_devices:
                continue  # already reported as an unknown kind
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown key (typo?) / 未知的配置项"
            problems.append((loc, msg))
    # The cross-field checks run on every bus and device that is valid on its own, so
    # one pass of check-config reports everything, not the structural errors first.
    if cfg is not None:
        buses: Indexed = list(enumerate(cfg.buses))
        devices: Indexed = list(enumerate(getattr(cfg, "devices", [])))
        dirs = profile_dirs(cfg.profile_dirs, p)
    else:
        buses, devices = valid_items(data)
        raw = data.get("profile_dirs")
        extra: list[str] = (
            raw if isinstance(raw, list) and all(isinstance(d, str) for d in raw) else []
        )
        dirs = profile_dirs(extra, p)
    problems += check_unique_ids(buses, devices)
    problems += check_bus_references(_raw_ids(data, "buses"), devices)
    if build_drivers:
        problems += check_drivers_build(devices, dirs)
    if problems:
        problems.sort(key=lambda pr: lines.line(pr[0]))
        raise ConfigError(
            [f"{name}:{lines.line(path_)}  {fmt_path(path_)}  {msg}" for path_, msg in problems]
        )
    assert cfg is not None
    if notes is not None and secret_notes:
        notes.extend(f"{name}:{lines.line(p_)}  {fmt_path(p_)}  {m}" for p_, m in secret_notes)
    return cfg
