"""Reading the YAML files an installer writes (agent config, device profiles).

Shared by :mod:`edge_agent.config.loader` and :mod:`drivers.modbus.profile` so both give the
same answers to the same mistakes:

* A file that is not UTF-8 (Windows Notepad on a Chinese system saves "ANSI", that is
  GBK) is a :class:`SourceError` at the line of the first bad byte, naming the encoding
  it looks like, instead of a ``UnicodeDecodeError`` traceback.
* Duplicate keys are errors (plain YAML silently keeps the last one), but merge keys
  (``<<: *air``) work as YAML defines them: keys written next to the merge override the
  merged ones.
* :class:`Lines` maps a key path such as ``("devices", 3, "unit")`` to its line.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


class SourceError(Exception):
    """A file that cannot be read as YAML; ``line`` is 1-based, ``message`` says why."""

    def __init__(self, line: int, where: str, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.where = where  # "(file)" or "(yaml)"
        self.message = message


_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16 (Notepad's 'Unicode')"),
    (codecs.BOM_UTF16_BE, "UTF-16 (Notepad's 'Unicode big endian')"),
)


def _guess_encoding(raw: bytes) -> str:
    """Name the encoding a non-UTF-8 file most likely has, for the error message."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name
    for codec, name in (
        ("gbk", "GBK/GB2312 (Notepad's 'ANSI' on Chinese Windows)"),
        ("gb18030", "GB18030"),
        ("big5", "Big5"),
    ):
        try:
            raw.decode(codec)
        except UnicodeDecodeError:
            continue
        return name
    return "an unknown 8-bit encoding (Latin-1?)"


def decode(raw: bytes) -> str:
    """The text of a UTF-8 file (a UTF-8 byte order mark is allowed); else :class:`SourceError`."""
    for bom, _ in _BOMS:
        if raw.startswith(bom):
            return _not_utf8(raw, 0)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return _not_utf8(raw, err.start)


def _not_utf8(raw: bytes, start: int) -> str:
    line = raw[:start].count(b"\n") + 1
    column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    encoding = _guess_encoding(raw)
    raise SourceError(
        line,
        "(file)",
        f"not UTF-8: byte 0x{raw[start]:02x} at column {column} looks like {encoding}; "
        "save the file as UTF-8 (Notepad: File > Save as > Encoding: UTF-8) / "
        f"文件不是 UTF-8 编码（疑似 {encoding.split(' ')[0]}），"
        f"请另存为 UTF-8",
    )


class FileProblems(ValueError):
    """Problems in another file that a config refers to (a device profile). ``problems``
    holds ``file:line  key.path  message`` lines at that file's own lines; the config
    loader reports them once per file, however many devices use it."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.path = path
        self.problems = problems


class KeyProblem(ValueError):
    """A problem with one key of a device's config (``key``), found when building it."""

    key = ""


class Lines:
    """Maps key paths to the line where that key (or list item) starts."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}

    def walk(self, node: yaml.Node, path: KeyPath = ()) -> None:
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

    def line(self, path: KeyPath) -> int:
        """The line of ``path``, else of its nearest parent that is in the file."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and keeps YAML merge keys usable."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Only keys written in this mapping can be duplicates: a key that also comes in
    # through ``<<: *anchor`` overrides the merged value, which is what merges are for.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)  # merged keys first, so the mapping's own keys win
    return dict(loader.construct_pairs(node))


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: Path) -> tuple[Any, Lines]:
    """Parse ``path``: the data and its line map. ``OSError`` when it cannot be read,
    :class:`SourceError` when it is not UTF-8 or not valid YAML."""
    text = decode(path.read_bytes())
    lines = Lines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise SourceError(mark.line + 1 if mark else 1, "(yaml)", str(err.problem or err)) from err
    except yaml.YAMLError as err:
        raise SourceError(1, "(yaml)", str(err)) from err
    if node is not None:
        lines.walk(node)
    return data, lines
