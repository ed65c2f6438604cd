"""C{--config FILE}: every C{twistd sipproxy} option from a TOML file.

The keys are the long option names (C{legs}, C{tcp-idle}, C{users}, ...),
found by asking the C{usage.Options} class itself (its C{optFlags},
C{optParameters} and C{opt_} methods), so an option added anywhere is a
key here without an edit. A flag takes C{true}/C{false}; a parameter one
string or number; an C{opt_} method with an argument (the repeatable
ones: C{legs}, C{domain}, C{block}, ...) one value or a list of them::

    legs = ["udp:192.0.2.10:5060", "tcp:192.0.2.10:5060"]
    registrar = true
    tcp-idle = 600

The file is turned into command-line arguments placed before the real
ones; an option given on the command line replaces the file's value
entirely (for a repeatable option too: the file's list is not merged).
A mistake in the file is one line naming the file, the key and the line
it is on, and the usual exit status 2.
"""
from __future__ import annotations

import difflib
import getopt
import os
import re
import sys
from typing import Optional, Sequence

from twisted.python import usage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - PyPy 3.9 / CPython < 3.11
    import tomli as tomllib

__all__ = ["CONFIG_PARAMETERS", "ConfigFile", "given_values", "option_kinds", "parse", "read_config"]

CONFIG_PARAMETERS = [
    ["config", None, None, "Read options from this TOML file: one key per option, named as the option "
                           "(tcp-idle = 600, registrar = true, legs = [\"udp:192.0.2.1:5060\"]); options on "
                           "the command line override it. SIGHUP re-reads it (see README \"Configuration "
                           "file and reload\")."],
]

#: Options that are no settings: never keys of a config file.
_NOT_KEYS = frozenset({"help", "version", "config"})

FLAG, VALUE, REPEATABLE = "flag", "value", "repeatable"


def option_kinds(options: usage.Options) -> dict[str, str]:
    """Each long option of an C{Options} instance and its kind: L{FLAG}
    (takes no argument), L{VALUE} (an C{optParameters} entry: the last
    one given wins) or L{REPEATABLE} (an C{opt_} method with an argument:
    each value given is handed to it)."""
    kinds: dict[str, str] = {}
    for spelled in options.longOpt:
        name = spelled.rstrip("=")
        canonical = options.synonyms.get(name, name)
        if canonical != name or canonical in _NOT_KEYS or len(canonical) < 2:
            continue
        if not spelled.endswith("="):
            kinds[name] = FLAG
        elif isinstance(options._dispatch.get(name), usage.CoerceParameter):
            kinds[name] = VALUE
        else:
            kinds[name] = REPEATABLE
    return kinds


class ConfigFile:
    """A TOML file read and turned into arguments.

    @ivar path: the file (absolute: a reload finds it after a chdir).
    @ivar values: key to value, as TOML gave them.
    @ivar text: the file's text (to find line numbers).
    """

    def __init__(self, path: str, values: dict[str, object], text: str) -> None:
        self.path = path
        self.values = values
        self.text = text

    def line_of(self, key: str) -> Optional[int]:
        """The first line that sets C{key} (plain, quoted, dotted or as a
        table), or None."""
        quoted = re.escape(key)
        pattern = re.compile(rf"""^\s*(?:\[\s*)?(?:{quoted}|"{quoted}"|'{quoted}')\s*[=.\]]""")
        for number, line in enumerate(self.text.splitlines(), 1):
            if pattern.match(line):
                return number
        return None

    def where(self, key: str) -> str:
        line = self.line_of(key)
        return f"--config {self.path}" + (f", line {line}" if line is not None else "")

    def problem(self, key: str, reason: str) -> usage.UsageError:
        shown = key if key.isprintable() else repr(key)  # a quoted key may hold a line break
        return usage.UsageError(f"{self.where(key)}: {shown}: {reason}")

    def arguments(self, options: usage.Options, skip: Sequence[str] = ()) -> list[str]:
        """The command-line arguments this file stands for, checked value
        by value (on a scratch C{Options} of the same class, so a bad value
        is reported with its key and line); keys in C{skip} are left out.

        @raise usage.UsageError: one line, for the first bad key or value.
        """
        kinds = option_kinds(options)
        scratch = type(options)()
        args: list[str] = []
        for key, value in self.values.items():
            kind = kinds.get(key)
            if kind is None:
                close = difflib.get_close_matches(key.replace("_", "-"), list(kinds), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                reason = "a config file cannot name another" if key == "config" else "no such option"
                raise self.problem(key, f"unknown key, {reason}{hint}")
            if key in skip:
                continue
            if kind == FLAG:
                if not isinstance(value, bool):
                    raise self.problem(key, f"want true or false, not {_show(value)}")
                if value:
                    args.append(f"--{key}")
                continue
            items = value if isinstance(value, list) and kind == REPEATABLE else [value]
            for item in items:
                text = _scalar(item)
                if text is None:
                    want = "a string or a number, or a list of them" if kind == REPEATABLE else "a string or a number"
                    raise self.problem(key, f"want {want}, not {_show(item)}")
                self._check(scratch, key, kind, text)
                args.append(f"--{key}={text}")
        return args

    def _check(self, scratch: usage.Options, key: str, kind: str, text: str) -> None:
        handler = scratch._dispatch[key]
        try:
            if kind == VALUE:
                handler.coerce(text)
            else:
                handler(key, text)
        except usage.UsageError as e:
            raise self.problem(key, str(e)) from None
        except (ValueError, TypeError) as e:
            raise self.problem(key, str(e) or f"bad value {text!r}") from None


def _scalar(value: object) -> Optional[str]:
    """A TOML value as one argument, or None when it is not one (a bool,
    a table, a list, a date)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def read_config(path: str) -> ConfigFile:
    """Read and parse a TOML file.

    @raise usage.UsageError: one line: unreadable, not UTF-8, bad TOML
        (tomllib's message carries the line and column).
    """
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise usage.UsageError(f"--config {path}: cannot read it: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise usage.UsageError(f"--config {path}, line {line}: not UTF-8 text") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        reason = " ".join(str(e).split())
        if "(at line " not in reason:  # "at end of document": the last line
            reason += f" (line {len(text.splitlines())})"
        raise usage.UsageError(f"--config {path}: bad TOML: {reason}") from None
    return ConfigFile(path, values, text)


def _given(options: usage.Options, argv: Sequence[str]) -> Optional[list[str]]:
    """The long names of the options C{argv} gives, or None when getopt
    cannot read it (the real parse then reports the problem)."""
    try:
        pairs, _ = getopt.getopt(list(argv), options.shortOpt, options.longOpt)
    except getopt.error:
        return None
    names = []
    for opt, value in pairs:
        name = opt[2:] if opt.startswith("--") else opt[1:]
        name = options.synonyms.get(name, options.synonyms.get(name.replace("-", "_"), name))
        names.append(name)
        if name == "config":
            names.append("=" + value)  # keeps the last --config value in order
    return names


def parse(options: usage.Options, argv: Optional[Sequence[str]] = None) -> Optional[ConfigFile]:
    """Parse C{argv} into C{options}, with the C{--config} file (when
    given) before the command line; the C{Options} class must list
    L{CONFIG_PARAMETERS}. Sets C{options.argv} (what to parse again on
    reload) and C{options.config_file}.

    @return: the L{ConfigFile} read, or None.
    @raise usage.UsageError: one line; for a cross-option check failing
        on a value that came from the file, the file and line are named.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    given = _given(options, argv)
    config: Optional[ConfigFile] = None
    file_args: list[str] = []
    if given is not None and "config" in given:
        path = [name[1:] for name in given if name.startswith("=")][-1]
        config = read_config(path)
        file_args = config.arguments(options, skip=given)
    options.argv = argv
    options.config_file = config
    options.arguments = file_args + argv
    try:
        usage.Options.parseOptions(options, file_args + argv)
    except usage.UsageError as e:
        if config is None:
            raise
        raise usage.UsageError(_locate(str(e), config, given or [])) from None
    return config


def given_values(options: usage.Options) -> dict[str, list[str]]:
    """What the file and the command line together gave each option (its
    values in order; C{""} for a flag), from the arguments L{parse} used:
    two parses of the same files compare equal when their settings do."""
    values: dict[str, list[str]] = {}
    try:
        pairs, _ = getopt.getopt(list(getattr(options, "arguments", [])), options.shortOpt, options.longOpt)
    except getopt.error:
        return values
    for opt, value in pairs:
        name = opt[2:] if opt.startswith("--") else opt[1:]
        name = options.synonyms.get(name, options.synonyms.get(name.replace("-", "_"), name))
        values.setdefault(name, []).append(value)
    return values


def _locate(message: str, config: ConfigFile, given: Sequence[str]) -> str:
    """C{message} with the file and line of the first option it names
    that came from the file (a check across options, or a file such as
    --users that cannot be read)."""
    for name in re.findall(r"--([a-z0-9][a-z0-9-]*)", message):
        if name in config.values and name not in given:
            return f"{message} ({config.where(name)})"
    return message
