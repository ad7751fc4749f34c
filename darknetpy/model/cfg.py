"""Darknet .cfg / .data SYNTAX: text becomes a list of :class:`Section` (no torch here).

Reproduces darknet's lexer (``parser.c: read_cfg``, ``utils.c: fgetl, strip``,
``option_list.c: read_option, option_find*, option_unused``):

* every space, tab, CR and LF is deleted *anywhere* in the line (``filters = 64`` -> ``filters=64``);
* ``[`` starts a section whose name is the whole stripped line (``[ net ]`` -> ``net``);
* blank lines and lines starting with ``#`` or ``;`` are skipped;
* ``key=value`` splits at the first ``=``; the first occurrence of a key wins, later duplicates
  are reported as unused, exactly like darknet's ``option_find`` + ``option_unused``.

Where darknet silently does something surprising (an empty value, a line without ``=``, an
inline ``# comment`` inside a string value) darknetpy raises :class:`CfgError` with
``path:line [section]`` instead.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import CfgError

T = TypeVar("T")

_WHITESPACE = re.compile(r"[ \t\r\n]")
# atoi/atof read the longest numeric prefix; darknet relies on that (e.g. `1.5` read as int gives 1).
_INT_PREFIX = re.compile(r"[+-]?\d+")
_FLOAT_PREFIX = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", re.I)


#: How the two orders differ, for a cfg and a .data file given in each other's place.
SWAPPED_HINT = ("darknetpy's verbs take the cfg first (darknetpy detect CFG WEIGHTS ..., map CFG "
                "DATA WEIGHTS), Darknet's forms the .data (darknetpy detector test DATA CFG ...)")


class CfgWarning(UserWarning):
    """A cfg key darknet would report as ``Unused field`` (an error under ``strict``)."""


@dataclass(frozen=True)
class Entry:
    """One ``key=value`` line, value exactly as darknet keeps it (whitespace removed)."""

    key: str
    value: str
    line: int


@dataclass(frozen=True)
class Section:
    """One ``[name]`` block of a .cfg file."""

    name: str  # "convolutional", "net", ... without brackets, case kept
    entries: tuple[Entry, ...]
    path: Path
    line: int  # 1-based line of the `[name]` header

    def where(self, line: int | None = None) -> str:
        """``path:line [name]``: the prefix of every message about this section."""
        return f"{self.path}:{self.line if line is None else line} [{self.name}]"

    @property
    def options(self) -> dict[str, str]:
        """First-wins mapping of keys to values (darknet's ``option_find``)."""
        out: dict[str, str] = {}
        for entry in self.entries:
            out.setdefault(entry.key, entry.value)
        return out

    def to_text(self) -> str:
        """The section back as cfg text (one key per line)."""
        lines = [f"[{self.name}]"] + [f"{e.key}={e.value}" for e in self.entries]
        return "\n".join(lines) + "\n"


def strip_line(raw: str) -> str:
    """darknet's ``fgetl`` + ``strip``: drop the line end, then every whitespace character."""
    return _WHITESPACE.sub("", raw)


def parse_cfg(text: str, path: str | Path = "<string>") -> list[Section]:
    """Split cfg ``text`` into sections, as darknet's ``read_cfg``.

    Raises:
        CfgError: a ``key=value`` line before any section, a line without ``=`` or with an
            empty value (darknet prints "Config file error line N" and drops it), or no section.
    """
    path = Path(path)
    sections: list[Section] = []
    name: str | None = None
    header_line = 0
    entries: list[Entry] = []

    def close() -> None:
        if name is not None:
            sections.append(Section(name, tuple(entries), path, header_line))

    for number, raw in enumerate(text.split("\n"), start=1):
        line = strip_line(raw)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            close()
            if not line.endswith("]"):
                raise CfgError(
                    f"{path}:{number}: section header {raw.strip()!r} does not end with ']'; "
                    "darknet keeps the whole line as the section name, so nothing may follow ']' "
                    "(move the comment to its own line)"
                )
            name, header_line, entries = line[1:-1], number, []
            continue
        if name is None:
            data = "[" not in text  # no section at all: a .data (key=value) file
            raise CfgError(
                f"{path}:{number}: {raw.strip()!r} comes before any [section]; "
                "a cfg must start with [net] (darknet crashes here)"
                + (f"; a .data file where the cfg goes? {SWAPPED_HINT}" if data else "")
            )
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise CfgError(
                f"{path}:{number} [{name}]: cannot parse {raw.strip()!r}; expected key=value"
            )
        if not value:
            raise CfgError(
                f"{path}:{number} [{name}]: {key}= has an empty value "
                "(darknet: 'Config file error line'); give a value or delete the line"
            )
        entries.append(Entry(key, value, number))
    close()
    if not sections:
        raise CfgError(f"{path}: no [section] found; is this a darknet .cfg file?")
    return sections


def read_cfg(path: str | Path) -> list[Section]:
    """Read a .cfg file into sections (see :func:`parse_cfg`)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CfgError(f"{path}: no such cfg file") from None
    except IsADirectoryError:
        raise CfgError(f"{path}: is a directory, expected a .cfg file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise CfgError(f"{path}: cannot read cfg file ({getattr(exc, 'strerror', None) or exc})") from None
    if b"\0" in raw[:4096]:
        raise CfgError(f"{path}: is a binary file, not a darknet .cfg (a .weights file given as cfg?)")
    return parse_cfg(raw.decode("utf-8", errors="replace"), path)


def read_key_values(path: str | Path, kind: str = ".data") -> list[Entry]:
    """Read a section-less ``key=value`` file (darknet's ``read_data_cfg``), same lexing as cfg."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError) as exc:
        raise CfgError(f"{path}: cannot read {kind} file ({getattr(exc, 'strerror', None) or exc})") from None
    entries: list[Entry] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = strip_line(raw)
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or not value:
            hint = f"; a .cfg where the {kind} file goes? {SWAPPED_HINT}" if line[0] == "[" else ""
            raise CfgError(
                f"{path}:{number}: cannot parse {raw.strip()!r}; expected key=value{hint}"
            )
        entries.append(Entry(key, value, number))
    return entries


@dataclass
class Options:
    """Typed reads of a section's options that remember which keys were read.

    Modelled on darknet's ``option_find_int/float/str`` and ``option_unused``: the first occurrence
    of a key wins, and :meth:`unused` lists every line nobody read (unknown keys, duplicates, keys
    that do not apply to this layer type).
    """

    section: Section
    _used: set[int] = field(default_factory=set)  # indices into section.entries
    _asked: set[str] = field(default_factory=set)  # every key looked up: what this section reads

    def _find(self, key: str) -> Entry | None:
        self._asked.add(key)
        for index, entry in enumerate(self.section.entries):
            if entry.key == key:
                self._used.add(index)
                return entry
        return None

    def has(self, key: str) -> bool:
        """True when ``key`` is present (does not mark it used)."""
        return any(e.key == key for e in self.section.entries)

    def where(self, entry: Entry | None = None) -> str:
        return self.section.where(entry.line if entry else None)

    def error(self, message: str, key: str | None = None) -> CfgError:
        """A CfgError located at ``key``'s line (or the section header)."""
        entry = None
        if key is not None:
            entry = next((e for e in self.section.entries if e.key == key), None)
        return CfgError(f"{self.where(entry)}: {message}")

    def _missing(self, key: str, kind: str) -> CfgError:
        return CfgError(f"{self.where()}: missing required {kind} key '{key}='")

    def get_str(self, key: str, default: str | None = None) -> str:
        entry = self._find(key)
        if entry is None:
            if default is None:
                raise self._missing(key, "string")
            return default
        return entry.value

    def get_int(self, key: str, default: int | None = None) -> int:
        """An integer read like darknet's ``atoi`` (numeric prefix); no numeric prefix is an error."""
        entry = self._find(key)
        if entry is None:
            if default is None:
                raise self._missing(key, "integer")
            return default
        return _atoi(entry, self)

    def get_float(self, key: str, default: float | None = None) -> float:
        entry = self._find(key)
        if entry is None:
            if default is None:
                raise self._missing(key, "number")
            return default
        return _atof(entry.value, entry, self)

    def get_bool(self, key: str, default: bool = False) -> bool:
        """A darknet flag: any non-zero integer is true (never the truthiness of a string)."""
        return self.get_int(key, int(default)) != 0

    def get_ints(self, key: str, default: Sequence[int] | None = None) -> tuple[int, ...]:
        """A comma list of integers (``mask=0, 1,2``); darknet stops reading at an inline ``#``."""
        entry = self._find(key)
        if entry is None:
            if default is None:
                raise self._missing(key, "list")
            return tuple(default)
        return tuple(_atoi(entry, self, part) for part in _list_parts(entry, self))

    def get_floats(self, key: str, default: Sequence[float] | None = None) -> tuple[float, ...]:
        entry = self._find(key)
        if entry is None:
            if default is None:
                raise self._missing(key, "list")
            return tuple(default)
        return tuple(_atof(part, entry, self) for part in _list_parts(entry, self))

    def get_choice(self, key: str, choices: Mapping[str, T], default: str) -> T:
        """A closed-vocabulary value; a miss lists the choices and the nearest one."""
        value = self.get_str(key, default)
        if value in choices:
            return choices[value]
        entry = next((e for e in self.section.entries if e.key == key), None)
        hint = ""
        if "#" in value:
            hint = " (darknet does not strip inline '#' comments: put the comment on its own line)"
        else:
            close = difflib.get_close_matches(value, list(choices), n=1)
            if close:
                hint = f" (did you mean '{close[0]}'?)"
        raise CfgError(
            f"{self.where(entry)}: {key}='{value}' is not one of "
            f"{', '.join(sorted(choices))}{hint}"
        )

    def ignore(self, *keys: str) -> None:
        """Declare darknet keys that darknetpy knowingly does not use (no unused-key warning)."""
        for key in keys:
            self._find(key)

    def unused(self) -> list[Entry]:
        """Every line nobody read, in file order (darknet's ``option_unused``)."""
        return [e for i, e in enumerate(self.section.entries) if i not in self._used]

    def nearest_key(self, key: str) -> str | None:
        """The key this section reads (so far) that ``key`` most likely misspells, if any."""
        close = difflib.get_close_matches(key, sorted(self._asked - {key}), n=1, cutoff=0.75)
        return close[0] if close else None

    def misspelt(self) -> str:
        """``'clases=1' (line 12) is not read: did you mean 'classes'?`` for every unread line
        whose key is close to one this section reads; empty when there is none."""
        hints = []
        for entry in self.unused():
            near = None if self.is_duplicate(entry) else self.nearest_key(entry.key)
            if near is not None:
                hints.append(f"'{entry.key}={entry.value}' (line {entry.line}) is not read: "
                             f"did you mean '{near}'?")  # fmt: skip
        return "; ".join(hints)

    def is_duplicate(self, entry: Entry) -> bool:
        """True when an earlier line of the section has ``entry``'s key (the first one wins)."""
        before = self.section.entries[: self.section.entries.index(entry)]
        return any(e.key == entry.key for e in before)

    def check_unused(self, strict: bool = False) -> None:
        """Warn (or, with ``strict``, raise) about every unread line; a key close to one the
        section reads gets a "did you mean" (``activaton=`` -> ``activation``)."""
        for entry in self.unused():
            duplicate = self.is_duplicate(entry)
            why = "duplicate key, the first occurrence wins" if duplicate else "not used by this layer"
            near = None if duplicate else self.nearest_key(entry.key)
            if near is not None:
                why += f", did you mean '{near}'?"
            message = (
                f"{self.where(entry)}: unused field '{entry.key}={entry.value}' ({why}; "
                "darknet: 'Unused field')"
            )
            if strict:
                raise CfgError(message + "; remove it or run without --strict")
            warnings.warn(message, CfgWarning, stacklevel=3)


def _list_parts(entry: Entry, opts: Options) -> list[str]:
    value = entry.value.split("#", 1)[0]
    parts = [p for p in value.split(",")]
    # darknet tolerates a trailing comma ("1,2,") by counting commas; an empty middle item is a typo.
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if any(p == "" for p in parts) or not parts:
        raise CfgError(f"{opts.where(entry)}: {entry.key}='{entry.value}' is not a comma-separated list")
    return parts


def _atoi(entry: Entry, opts: Options, text: str | None = None) -> int:
    text = entry.value if text is None else text
    match = _INT_PREFIX.match(text)
    if match is None:
        raise CfgError(f"{opts.where(entry)}: {entry.key}='{entry.value}' is not an integer")
    return int(match.group(0))


def _atof(text: str, entry: Entry, opts: Options) -> float:
    match = _FLOAT_PREFIX.match(text)
    if match is None:
        raise CfgError(f"{opts.where(entry)}: {entry.key}='{entry.value}' is not a number")
    return float(match.group(0))


def sections_to_text(sections: Iterable[Section]) -> str:
    """Sections back to cfg text; ``parse_cfg(sections_to_text(s))`` gives the same options."""
    return "\n".join(s.to_text() for s in sections)
