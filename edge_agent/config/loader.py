"""Loading the agent's YAML configuration, with errors an installer can act on.

Every problem is reported as ``file:line  key.path  message``, all at once, so
``edge-agent check-config`` and a refused start print the same list. Secrets
(MQTT password, TLS key passphrase, the pseudonym secret) are never literal in
the YAML: they are ``${ENV_NAME}`` or ``${cred:NAME}`` (a file in
``$CREDENTIALS_DIRECTORY``, systemd ``LoadCredential=``).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, Field, ValidationError, create_model

from edge_agent import registry
from edge_agent.config.models import (
    BusConfig,
    CommandsConfig,
    CriticalInput,
    DoorConfig,
    DoorsConfig,
    HttpConfig,
    MqttConfig,
    OutboxConfig,
    SiteConfig,
    Strict,
    site_tz,
)
from edge_agent.config.patrol import PatrolConfig, check_patrol
from edge_agent.config.rules import RulesConfig, check_rules
from edge_agent.config.sirens import SirenConfig, check_sirens, valid_sirens
from edge_agent.config.yamlsrc import FileProblems, KeyProblem, SourceError
from edge_agent.config.yamlsrc import load as load_yaml
from edge_agent.console.config import ConsoleConfig, check_console
from edge_agent.errors import ConfigError
from edge_agent.notify.config import NotifyConfig
from edge_agent.snapshots.config import SnapshotsConfig, check_rule_cameras

log = logging.getLogger(__name__)

SECRET_FIELDS: tuple[tuple[str, ...], ...] = (
    ("mqtt", "password"),
    ("mqtt", "tls", "key_password"),
    ("site", "pseudonym_secret"),
    ("commands", "key"),
)

Path_ = tuple[str | int, ...]

#: A secret reference check-config cannot resolve on this machine (see ``notes``).
_UNRESOLVED = "<unresolved>"


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
        description="'adjtimex': ask the kernel (works with chrony, ntpd, timesyncd; if a "
        "seccomp filter such as ProtectClock=yes refuses it: timesyncd's flag, else not "
        "synchronised); "
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
    http: HttpConfig = Field(
        default_factory=HttpConfig, description="HTTP server for push devices and the console"
    )
    console: ConsoleConfig | None = Field(
        default=None,
        description="The local web console: alarms, devices, health, the config check "
        "(docs/console.md); off unless written here / 本地网页控制台（默认关闭）",
    )
    buses: list[BusConfig] = Field(
        default_factory=list, description="Serial lines and shared TCP endpoints"
    )
    doors: DoorsConfig | None = Field(
        default=None,
        description="Door logic: door contacts, exit buttons, fire and emergency inputs "
        "(docs/doors.md#door-logic) / 门磁与门逻辑",
    )
    patrol: PatrolConfig = Field(
        default_factory=PatrolConfig, description="Guard patrol checkpoints and routes / 电子巡更"
    )
    rules: RulesConfig = Field(
        default_factory=RulesConfig,
        description="Alarm rules: the default set, site rule files, schedules (docs/alarms.md) "
        "/ 告警规则",
    )
    notify: NotifyConfig = Field(
        default_factory=NotifyConfig,
        description="Alarm delivery to team-chat robots and webhooks (docs/notify.md) / 告警推送",
    )
    snapshots: SnapshotsConfig = Field(
        default_factory=SnapshotsConfig,
        description="Camera snapshots: folder, cap, timeouts, cameras by URL (docs/cameras.md) "
        "/ 摄像机抓图",
    )
    sirens: list[SirenConfig] = Field(
        default_factory=list,
        description="Sirens and strobes on relay outputs, switched by alarms "
        "(docs/alarms.md#siren) / 声光报警器",
    )


_model_cache: dict[tuple[str, ...], type[AgentConfigBase]] = {}


def settings_fields(kinds: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys the kinds add through their ``Settings`` model (Modbus:
    ``profile_dirs``), as ``create_model`` fields. A key that the core or an earlier kind
    already has is left out, with one log line (the kind then gets its default)."""
    fields: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for kind, cls in kinds.items():
        model = getattr(cls, "Settings", None)
        if model is None:
            continue
        for name, info in model.model_fields.items():
            taken = (
                "the core" if name in AgentConfigBase.model_fields or name == "devices" else None
            )
            taken = taken or owner.get(name)
            if taken is not None:
                log.warning(
                    "driver kind %r: top-level key %r is already %s's; ignored", kind, name, taken
                )
                continue
            owner[name] = repr(kind)
            fields[name] = (info.annotation, info)
    return fields


def config_model(kinds_named: Iterable[str] | None = None) -> type[AgentConfigBase]:
    """The config model: the core's sections, the top-level keys of each kind's
    ``Settings``, and ``devices`` as a union discriminated on ``kind``; of every kind,
    or of ``kinds_named`` only (see :func:`kinds_of_file`)."""
    kinds = registry.drivers(kinds_named)
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
        **settings_fields(kinds),
        devices=(list[device_type], Field(default_factory=list, description="Devices to read")),
    )
    _model_cache[key] = model
    return model


def kinds_of_file(data: dict[str, Any]) -> list[str] | None:
    """The kinds a file needs the models of: those its devices name, when that is all it
    needs; None (every kind) when a device has no known kind, or a top-level key is
    neither the core's nor one of those kinds' ``Settings``. A site then builds (and
    imports) only the models it uses, and a file with a mistake gets the same messages
    as against every kind: the known kinds in "unknown kind", every key in did-you-mean."""
    devices = data.get("devices", [])
    if not isinstance(devices, list):
        return None
    known = registry.names()
    named: dict[str, None] = {}
    for dev in devices:
        kind = dev.get("kind") if isinstance(dev, dict) else None
        if not isinstance(kind, str) or kind not in known:
            return None
        named[kind] = None
    if not named:
        return None  # no devices: nothing to save
    kinds = registry.drivers(named)
    if len(kinds) != len(named):
        return None  # a kind that does not load: reported against every kind
    keys = set(AgentConfigBase.model_fields) | {"devices"} | set(settings_fields(kinds))
    if any(key not in keys for key in data):
        return None
    return list(named)


def kind_settings(cls: Any, source: AgentConfigBase | dict[str, Any]) -> BaseModel | None:
    """The kind's ``Settings`` instance from a validated config (or, when the file has
    errors elsewhere, from its raw data: defaults for what does not validate); None for a
    kind without settings."""
    model: type[BaseModel] | None = getattr(cls, "Settings", None)
    if model is None:
        return None
    if isinstance(source, dict):
        raw = {k: source[k] for k in model.model_fields if k in source}
        try:
            return model.model_validate(raw)
        except ValidationError:
            pass  # reported by the whole model's validation
        try:
            return model()
        except ValidationError:
            return None
    return model.model_validate(
        {k: getattr(source, k) for k in model.model_fields if hasattr(source, k)}
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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def allowed_keys(model: type[BaseModel], data: Any, path: Path_) -> list[str]:
    """The keys the mapping at ``path`` may hold; a union picks the member its
    ``kind:`` / ``type:`` names."""
    models: list[type[BaseModel]] = [model]
    cur = data
    for part in path:
        if isinstance(part, str):
            cur = cur.get(part) if isinstance(cur, dict) else None
        else:
            cur = cur[part] if isinstance(cur, list) and 0 <= part < len(cur) else None
        if isinstance(part, int):
            continue  # list item: same candidate models as the list
        nxt: list[type[BaseModel]] = []
        for m in models:
            field = m.model_fields.get(part)
            if field is not None:
                nxt += _models_in(field.annotation)
        models = nxt
    if isinstance(cur, dict) and len(models) > 1:
        tagged = [
            m
            for m in models
            for tag in ("kind", "type")
            if tag in m.model_fields and cur.get(tag) in get_args(m.model_fields[tag].annotation)
        ]
        models = tagged or models
    return sorted({name for m in models for name in m.model_fields})


def close_match(word: str, choices: list[str] | set[str]) -> str | None:
    """The one of ``choices`` that ``word`` is most likely a typo of, or None."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _resolve_secrets(
    data: dict[str, Any], problems: list[tuple[Path_, str]], notes: list[tuple[Path_, str]] | None
) -> None:
    """Replace secret references by their values. With ``notes`` (check-config on a
    laptop), a reference that cannot be resolved here is a note, not an error."""
    from edge_agent.config.secrets import SecretError, is_reference, resolve

    # Robot URLs hold the robot's key: secrets like the others, one per list item.
    notify = data.get("notify")
    robots = notify.get("robots") if isinstance(notify, dict) else None
    robot_fields: list[Path_] = [
        ("notify", "robots", i, key)
        for i in range(len(robots) if isinstance(robots, list) else 0)
        for key in ("url", "secret")
    ]
    # Camera passwords of snapshots.cameras: one per list item, like the robots'.
    snaps = data.get("snapshots")
    cams = snaps.get("cameras") if isinstance(snaps, dict) else None
    robot_fields += [
        ("snapshots", "cameras", i, "password")
        for i in range(len(cams) if isinstance(cams, list) else 0)
    ]
    for path in (*SECRET_FIELDS, *robot_fields):
        parent: Any = data
        for part in path[:-1]:
            if isinstance(part, int):
                parent = parent[part] if isinstance(parent, list) else None
            else:
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
                parent[path[-1]] = _UNRESOLVED


# -- cross-field checks --------------------------------------------------------------
def check_kinds(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """Name the unknown kind, and the known ones, instead of a union error per field."""
    problems: list[tuple[Path_, str]] = []
    devices = data.get("devices")
    if not isinstance(devices, list):
        return problems
    named = [dev["kind"] for dev in devices if isinstance(dev, dict) and "kind" in dev]
    if all(isinstance(kind, str) for kind in named) and registry.names().issuperset(named):
        known = registry.drivers(named)
        if len(known) == len(set(named)):
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
    if isinstance(raw_devices, list):
        named = {dev.get("kind") for dev in raw_devices if isinstance(dev, dict)}
        known = registry.drivers(k for k in named if isinstance(k, str))
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


def check_across(
    bus_ids: set[str], devices: Indexed, source: AgentConfigBase | dict[str, Any], base: Path
) -> list[tuple[Path_, str]]:
    """Each kind's own checks across its devices (``check_across`` of its driver class:
    Modbus checks bus references and one unit id per bus); the loader knows no kind."""
    from edge_agent.driver import AcrossContext

    problems: list[tuple[Path_, str]] = []
    kinds = registry.drivers({dev.kind for _, dev in devices})
    by_kind: dict[str, Indexed] = {}
    for i, dev in devices:
        by_kind.setdefault(dev.kind, []).append((i, dev))
    for kind, items in by_kind.items():
        cls = kinds.get(kind)
        check = getattr(cls, "check_across", None)
        if check is None:
            continue
        ctx = AcrossContext(frozenset(bus_ids), kind_settings(cls, source), base)
        problems += check(items, ctx)
    return problems


def check_hubs_http(data: dict[str, Any], devices: Indexed) -> list[tuple[Path_, str]]:
    """A kind whose hub receives over HTTP (``Hub.needs_http``) needs ``http.bind`` in the
    file: the default (this gateway only) is never an address its devices can reach."""
    http = data.get("http")
    if isinstance(http, dict) and "bind" in http:
        return []
    kinds = registry.drivers({dev.kind for _, dev in devices})
    problems: list[tuple[Path_, str]] = []
    seen: set[str] = set()
    for i, dev in devices:
        hub = getattr(kinds.get(dev.kind), "Hub", None)
        if not dev.enabled or dev.kind in seen or not getattr(hub, "needs_http", False):
            continue
        seen.add(dev.kind)
        problems.append(
            (
                ("devices", i, "kind"),
                f"kind {dev.kind!r} receives its devices' data over HTTP: set http.bind "
                "to an address they can reach, e.g. 0.0.0.0:8080 / 该类设备通过 HTTP "
                "上传数据：请设置 http.bind（设备可访问的地址，如 0.0.0.0:8080）",
            )
        )
    return problems


def _door_items(cfg: AgentConfigBase | None, data: dict[str, Any]) -> tuple[Indexed, Indexed]:
    """Doors and alarm inputs that validate on their own, with their index, so the
    door checks run even when something else in the file is wrong."""
    if cfg is not None:
        if cfg.doors is None:
            return [], []
        return list(enumerate(cfg.doors.doors)), list(enumerate(cfg.doors.inputs))
    section = data.get("doors")
    if not isinstance(section, dict):
        return [], []
    out: tuple[Indexed, Indexed] = ([], [])
    for items, key, model in ((out[0], "doors", DoorConfig), (out[1], "inputs", CriticalInput)):
        raw = section.get(key)
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            try:
                items.append((i, model.model_validate(item)))
            except ValidationError:
                pass  # reported by the whole model's validation
    return out


def check_doors(
    cfg: AgentConfigBase | None,
    data: dict[str, Any],
    devices: Indexed,
    source: AgentConfigBase | dict[str, Any],
    base: Path,
) -> list[tuple[Path_, str]]:
    """Every door and alarm input names a device of ``devices:`` and a point that device
    reports (a door that watches nothing would never say it was forced); door ids are
    unique and no input serves two purposes."""
    doors, inputs = _door_items(cfg, data)
    if not doors and not inputs:
        return []
    from edge_agent.driver import DriverContext

    kinds = registry.drivers()
    # a device that does not validate still exists: name only its points, if any
    by_id = {dev.id: dev for _, dev in devices}
    written = _raw_ids(data, "devices")
    points: dict[str, set[str] | None] = {}

    def points_of(device_id: str) -> set[str] | None:
        if device_id not in points:
            dev = by_id[device_id]
            cls = kinds[dev.kind]
            ctx = DriverContext(buses={}, settings=kind_settings(cls, source), config_dir=base)
            try:
                points[device_id] = {m.name for m in cls(dev, ctx).metrics()}
            except Exception:  # reported by check_drivers_build
                points[device_id] = None
        return points[device_id]

    problems: list[tuple[Path_, str]] = []
    used: dict[tuple[str, str], str] = {}

    def check_ref(path: Path_, device: str, point: str | None, what: str) -> None:
        if device not in by_id:
            if device in written:
                return  # the device has its own problem, reported at its lines
            guess = close_match(device, written)
            hint = f"did you mean {guess!r}?" if guess else f"devices: {', '.join(sorted(written))}"
            problems.append(((*path, "device"), f"unknown device {device!r} ({hint}) / 设备不存在"))
            return
        if point is None:
            return
        have = points_of(device)
        if have is not None and point not in have:
            guess = close_match(point, have)
            hint = f"did you mean {guess!r}?" if guess else f"points: {', '.join(sorted(have))}"
            problems.append(
                (
                    (*path, "point"),
                    f"device {device!r} has no point {point!r} ({hint}) / 该设备没有此输入点",
                )
            )
            return
        if (device, point) in used:
            problems.append(
                (
                    (*path, "point"),
                    f"{device}.{point} is already {used[(device, point)]} / 输入点重复使用",
                )
            )
        used[(device, point)] = what

    seen: dict[str, int] = {}
    for i, door in doors:
        path: Path_ = ("doors", "doors", i)
        if door.id in seen:
            problems.append(
                (
                    (*path, "id"),
                    f"duplicate door id {door.id!r} (first at doors.doors[{seen[door.id]}]) "
                    "/ 门 id 重复",
                )
            )
        seen.setdefault(door.id, i)
        check_ref(
            (*path, "contact"),
            door.contact.device,
            door.contact.point,
            f"the contact of door {door.id!r}",
        )
        if door.rex is not None:
            check_ref(
                (*path, "rex"),
                door.rex.device,
                door.rex.point,
                f"the exit button of door {door.id!r}",
            )
        for j, grant in enumerate(door.grants):
            check_ref((*path, "grants", j), grant.device, None, "")
    for i, inp in inputs:
        check_ref(("doors", "inputs", i), inp.device, inp.point, f"the {inp.input} input {i}")
    return problems


def check_siren_outputs(
    cfg: AgentConfigBase | None,
    data: dict[str, Any],
    devices: Indexed,
    source: AgentConfigBase | dict[str, Any],
    base: Path,
) -> list[tuple[Path_, str]]:
    """Every siren names a device and a writable coil of its profile (the driver, built
    once without I/O, names its switchable outputs: ``Switchable.switch_points``)."""
    sirens = valid_sirens(cfg, data)
    if not sirens:
        return []
    from edge_agent.driver import DriverContext, Switchable

    kinds = registry.drivers({dev.kind for _, dev in devices})
    by_id = {dev.id: dev for _, dev in devices}

    def outputs_of(device_id: str) -> list[str] | bool | None:
        dev = by_id[device_id]
        cls = kinds[dev.kind]
        ctx = DriverContext(buses={}, settings=kind_settings(cls, source), config_dir=base)
        try:
            driver = cls(dev, ctx)
        except Exception:  # reported by check_drivers_build
            return None
        return driver.switch_points() if isinstance(driver, Switchable) else False

    return check_sirens(sirens, by_id, _raw_ids(data, "devices"), outputs_of)


def prepare_tls(data: dict[str, Any], base: Path) -> None:
    """An empty ``tls:`` (every key commented out) means TLS with the defaults, not plain TCP;
    relative CA/certificate/key paths are taken from the config file's folder."""
    mqtt = data.get("mqtt")
    if not isinstance(mqtt, dict) or "tls" not in mqtt:
        return
    if mqtt["tls"] is None:
        mqtt["tls"] = {}
    tls = mqtt["tls"]
    if isinstance(tls, dict):
        for key in ("ca_file", "cert_file", "key_file"):
            value = tls.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                tls[key] = str(base / value)


def _mqtt_section(cfg: AgentConfigBase | None, data: dict[str, Any]) -> MqttConfig | None:
    """The validated ``mqtt`` section, also when something else in the file is wrong."""
    if cfg is not None:
        return cfg.mqtt
    try:
        return MqttConfig.model_validate(data.get("mqtt") or {})
    except ValidationError:
        return None


def check_credentials_encrypted(mqtt: MqttConfig) -> list[tuple[Path_, str]]:
    """A user name and password go over TLS, to this gateway itself, or with an explicit opt-in."""
    if mqtt.username is None and mqtt.password is None:
        return []
    if mqtt.tls is not None or mqtt.allow_plaintext_credentials:
        return []
    from edge_agent.mqtt.tls import is_loopback

    if is_loopback(mqtt.host):
        return []
    key = "username" if mqtt.username is not None else "password"
    return [
        (
            ("mqtt", key),
            f"the user name and password would travel to {mqtt.host} unencrypted: add 'tls: {{}}' "
            "(system CAs) or 'tls: {ca_file: ...}' under mqtt, or set "
            "mqtt.allow_plaintext_credentials: true on a trusted network / "
            "用户名和密码将以明文发送：请配置 mqtt.tls，"
            "或设置 mqtt.allow_plaintext_credentials: true",
        )
    ]


def _unresolved(secret: str | None) -> bool:
    """A secret not available here (check-config on a laptop) or that failed to resolve
    (already reported): nothing to check it against."""
    from edge_agent.config.secrets import is_reference

    return secret is not None and (secret == _UNRESOLVED or is_reference(secret))


def check_tls_files(mqtt: MqttConfig) -> list[tuple[Path_, str]]:
    """Every CA, certificate and key file exists, is readable, and loads."""
    from edge_agent.mqtt.tls import TlsFileError, TlsSettings, check_readable, client_context

    tls = mqtt.tls
    if tls is None:
        return []
    problems: list[tuple[Path_, str]] = []
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        try:
            if path is not None:
                check_readable(key, path)
        except TlsFileError as err:
            problems.append((("mqtt", "tls", key), str(err)))
    if problems:
        return problems
    settings = TlsSettings(tls.ca_file, tls.cert_file, tls.key_file, tls.key_password)
    try:
        # The key passphrase may be a credential only the gateway has (check-config on a
        # laptop): then the files are checked, the key is not loaded.
        client_context(settings, check_key=not _unresolved(tls.key_password))
    except TlsFileError as err:
        return [(("mqtt", "tls", err.key), str(err))]
    return []


def check_drivers_build(
    devices: Indexed,
    source: AgentConfigBase | dict[str, Any],
    base: Path,
    other_files: list[str] | None = None,
) -> list[tuple[Path_, str]]:
    """Build each device's driver once (no I/O): catches what only the kind can tell
    (a Modbus profile that is missing, a point it does not have).

    A broken data file of the kind (a profile) is reported once, at its own lines, into
    ``other_files``; not once per device that uses it."""
    from edge_agent.driver import DriverContext

    problems: list[tuple[Path_, str]] = []
    reported: set[str] = set()
    kinds = registry.drivers({dev.kind for _, dev in devices})
    if isinstance(source, AgentConfigBase):
        zone: Any = source.site.timezone
    else:
        site = source.get("site")
        zone = (
            site.get("timezone", SiteConfig.model_fields["timezone"].default)
            if isinstance(site, dict)
            else None
        )
    try:
        tz = site_tz(zone) if isinstance(zone, str) else UTC
    except ValueError:
        tz = UTC  # reported by the site section's own check
    contexts: dict[str, DriverContext] = {}
    for i, dev in devices:
        cls = kinds[dev.kind]
        if dev.kind not in contexts:
            contexts[dev.kind] = DriverContext(
                buses={}, settings=kind_settings(cls, source), config_dir=base, tz=tz
            )
        try:
            cls(dev, contexts[dev.kind])
        except FileProblems as err:
            if str(err.path) not in reported:
                reported.add(str(err.path))
                if other_files is not None:
                    other_files.extend(err.problems)
                else:
                    problems.append((("devices", i), str(err)))
        except KeyProblem as err:
            problems.append((("devices", i, err.key) if err.key else ("devices", i), str(err)))
        except (ValueError, KeyError, OSError) as err:
            problems.append((("devices", i), str(err)))
    problems += check_hubs_build(devices, source, base)
    return problems


def check_hubs_build(
    devices: Indexed, source: AgentConfigBase | dict[str, Any], base: Path
) -> list[tuple[Path_, str]]:
    """Build each kind's hub once, as the supervisor will (no I/O): an address it cannot
    listen on, or an HTTP route two kinds claim, is a config error here, not a crash at
    start. Reported at the kind's first enabled device."""
    from edge_agent.driver import HubContext
    from edge_agent.http import HttpServer

    kinds = registry.drivers({dev.kind for _, dev in devices})
    http_cfg = source.http if isinstance(source, AgentConfigBase) else HttpConfig()
    server = HttpServer(http_cfg)  # only collects routes: never started here
    first: dict[str, int] = {}
    for i, dev in devices:
        if dev.enabled:
            first.setdefault(dev.kind, i)
    problems: list[tuple[Path_, str]] = []
    for kind, i in first.items():
        cls = kinds[kind]
        hub_cls = getattr(cls, "Hub", None)
        if hub_cls is None:
            continue
        ctx = HubContext(
            kind=kind,
            settings=kind_settings(cls, source),
            devices=[d for _, d in devices if d.kind == kind and d.enabled],
            http=server if getattr(hub_cls, "needs_http", False) else None,
            config_dir=base,
        )
        try:
            hub_cls(ctx)
        except (ValueError, KeyError, OSError) as err:
            problems.append((("devices", i, "kind"), f"{kind} listener: {err}"))
    return problems


#: Kinds whose events carry a card number (``card_read``): without ``site.pseudonym_secret``
#: (or the ``raw_card_ids`` opt-in) their cards go out as null.
CARD_READER_KINDS = ("wg", "hikvision", "zkteco")


def check_card_secret(site: Any, devices: Indexed) -> list[tuple[Path_, str]]:
    """A warning (not an error: a site may count swipes without knowing whose) when card
    readers are configured but their card numbers would be published as null."""
    if getattr(site, "pseudonym_secret", None) or getattr(site, "raw_card_ids", False):
        return []
    readers = [(i, d) for i, d in devices if getattr(d, "kind", None) in CARD_READER_KINDS]
    if not readers:
        return []
    i, first = readers[0]
    more = f" (and {len(readers) - 1} more)" if len(readers) > 1 else ""
    return [
        (
            ("devices", i, "kind"),
            f"{first.kind} reads cards{more}, but site.pseudonym_secret is not set and "
            "site.raw_card_ids is false: card_read events will carry card: null "
            "/ 已配置读卡设备，但未设置 site.pseudonym_secret（raw_card_ids 为 false），"
            "刷卡事件的卡号将为空",
        )
    ]


def load_config(
    path: str | os.PathLike[str],
    *,
    build_drivers: bool = True,
    notes: list[str] | None = None,
    warnings: list[str] | None = None,
) -> AgentConfigBase:
    """Load, validate and check a config file. Raises :class:`ConfigError` with every problem.

    With ``notes`` (a list to fill), secrets that cannot be resolved on this machine
    are reported there instead of failing: ``check-config`` on a laptop. With
    ``warnings``, what is valid but probably not meant (card readers whose cards
    would go out as null) is added there as ``file:line  key.path  message``.
    """
    p = Path(path)
    name = str(path)
    try:
        data, lines = load_yaml(p)
    except OSError as err:
        raise ConfigError([f"{name}:1  (file)  cannot read: {err.strerror or err}"]) from err
    except SourceError as err:
        raise ConfigError([f"{name}:{err.line}  {err.where}  {err.message}"]) from err
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{name}:1  (top)  the file must be a mapping with site:, mqtt:, devices: ..."]
        )
    # Top-level keys starting with "x-" are the installer's own (docker-compose's habit):
    # a place for anchors such as ``x-air: &air {kind: modbus, profile: air7in1}``.
    for key in [k for k in data if isinstance(k, str) and k.startswith("x-")]:
        del data[key]

    # A section whose keys are all commented out is null in YAML: same as absent.
    for section in (
        "mqtt",
        "outbox",
        "publish",
        "logging",
        "clock",
        "patrol",
        "rules",
        "snapshots",
    ):
        if section in data and data[section] is None:
            del data[section]
    prepare_tls(data, p.resolve().parent)
    problems: list[tuple[Path_, str]] = []
    secret_notes: list[tuple[Path_, str]] | None = [] if notes is not None else None
    _resolve_secrets(data, problems, secret_notes)
    problems += check_kinds(data)
    bad_devices = {p_[1] for p_, _ in problems if p_[:1] == ("devices",)}
    model = config_model(kinds_of_file(data))
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
                guess = close_match(str(loc[-1]), allowed_keys(model, data, loc[:-1]))
                msg = (
                    f"unknown key; did you mean {guess!r}? / 未知的配置项，是否应为 {guess}？"
                    if guess
                    else "unknown key (typo?) / 未知的配置项"
                )
            problems.append((loc, msg))
    # The cross-field checks run on every bus and device that is valid on its own, so
    # one pass of check-config reports everything, not the structural errors first.
    base = p.resolve().parent
    source: AgentConfigBase | dict[str, Any] = data
    if cfg is not None:
        buses: Indexed = list(enumerate(cfg.buses))
        devices: Indexed = list(enumerate(getattr(cfg, "devices", [])))
        source = cfg
    else:
        buses, devices = valid_items(data)
    mqtt = _mqtt_section(cfg, data)
    if mqtt is not None:
        problems += check_credentials_encrypted(mqtt)
        problems += check_tls_files(mqtt)
    problems += check_unique_ids(buses, devices)
    problems += check_across(_raw_ids(data, "buses"), devices, source, base)
    problems += check_hubs_http(data, devices)
    problems += check_console(data, base)
    problems += check_doors(cfg, data, devices, source, base)
    problems += check_siren_outputs(cfg, data, devices, source, base)
    problems += check_patrol(data.get("patrol"), _raw_ids(data, "devices"), data.get("site"))
    other_files: list[str] = []
    rule_problems, rule_files = check_rules(data.get("rules"), base)
    problems += rule_problems
    if not rule_problems and not rule_files:
        problems += check_rule_cameras(
            data.get("rules"), data.get("snapshots"), _raw_ids(data, "devices"), base
        )
    other_files += rule_files
    if build_drivers:
        problems += check_drivers_build(devices, source, base, other_files)
    if problems or other_files:
        problems.sort(key=lambda pr: lines.line(pr[0]))
        raise ConfigError(
            [f"{name}:{lines.line(path_)}  {fmt_path(path_)}  {msg}" for path_, msg in problems]
            + other_files
        )
    assert cfg is not None
    if notes is not None and secret_notes:
        notes.extend(f"{name}:{lines.line(p_)}  {fmt_path(p_)}  {m}" for p_, m in secret_notes)
    if warnings is not None:
        warnings.extend(
            f"{name}:{lines.line(p_)}  {fmt_path(p_)}  {m}"
            for p_, m in check_card_secret(cfg.site, devices)
        )
    return cfg
