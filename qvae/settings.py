"""Settings declared once: a dataclass field with its default, accepted range and help text.

`setting(default, help, ...)` declares a field; the same declaration then gives
- the validation (`check_fields`: a one-line ConfigError naming the field and its range),
- the command-line flags (`add_flags`: one `--field-name` per field, the range in its help),
- the MLproject check (tests/test_mlproject.py compares its parameters with these fields).

Plain Python and argparse only (numpy only to read a .npy list): the config, the CLI and the
tuning package all import it cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

META_KEY = "setting"


class ConfigError(ValueError):
    """A setting holds a value outside its accepted range."""


@dataclass(frozen=True)
class Rule:
    """The accepted values of one setting: an integer or float range, a choice, or a text pattern;
    kind "floats" is one float or a tuple of them, each in the float range (`parse_floats` reads its text).

    `zero` makes 0 accepted outside `low..high` with that meaning ("skip", "all"); `note` says
    what a special value means; `prefixes` accepts e.g. any "cuda:N" besides the choices.
    """

    kind: str = "text"  # int | float | floats (one float, or a tuple of them) | choice | text | bool | any
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # float: value > low instead of >= low
    zero: str = ""
    choices: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    pattern: str = ""  # text: a regular expression the whole value must match
    pattern_text: str = ""  # text: the pattern in words
    non_empty: bool = False  # text: "" is refused
    note: str = ""

    def describe(self, high: float | None = None) -> str:
        """The range in words, e.g. 'an integer in 1..inf', '0 (skip) or in 2..10000', 'one of a, b'."""
        high = self.high if high is None else high
        upper = "inf" if high is None else f"{high:g}" if isinstance(high, float) else str(high)
        if self.kind == "int" and self.zero:
            text = f"0 ({self.zero}) or in {self.low}..{upper}"
        elif self.kind == "int":
            text = f"an integer in {self.low}..{upper}"
        elif self.kind == "float":
            text = (f"{f'0 ({self.zero}) or ' if self.zero else ''}a finite number {'>' if self.low_open else '>='} "
                    f"{self.low}{'' if high is None else f' and <= {upper}'}")
        elif self.kind == "floats":
            text = (f"a finite number {'>' if self.low_open else '>='} {self.low}, or a list of them "
                    f"(comma- or space-separated, or @FILE)")
        elif self.kind == "choice":
            shown = tuple(c or '""' for c in self.choices) + tuple(p + "N" for p in self.prefixes)
            text = "one of " + ", ".join(shown)
        elif self.kind in ("bool", "any"):
            text = "true or false" if self.kind == "bool" else "anything"
        elif self.pattern:
            text = self.pattern_text or f"matching {self.pattern}"
        else:
            text = "a non-empty path" if self.non_empty else "any text"
        return text + (f"; {self.note}" if self.note else "")

    def accepts(self, value: Any, high: float | None = None) -> bool:
        high = self.high if high is None else high
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return False
            return bool(self.zero and value == 0) or (value >= self.low and (high is None or value <= high))
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            inside = (value > self.low if self.low_open else value >= self.low) and (high is None or value <= high)
            return inside or bool(self.zero and value == 0)
        if self.kind == "floats":
            return _first_refused(self, value) is None
        if self.kind == "choice":
            return value in self.choices or (isinstance(value, str) and bool(self.prefixes)
                                             and value.startswith(self.prefixes))
        if self.kind in ("bool", "any"):
            return self.kind == "any" or isinstance(value, bool)
        if not isinstance(value, str):
            return False
        if self.pattern:
            return re.fullmatch(self.pattern, value) is not None
        return bool(value) or not self.non_empty

    def error(self, name: str, value: Any, high: float | None = None, why: str = "") -> ConfigError:
        separator = "; got" if self.kind == "choice" else ", got"
        if self.kind == "text" and self.non_empty:
            return ConfigError(f"{name} must be {self.describe()}")
        reason = f" ({why})" if why else ""
        if self.kind == "floats" and isinstance(value, tuple) and value:  # name the culprit, not all the values
            index = _first_refused(self, value)
            return ConfigError(f"{name} must be {self.describe(high)}{reason}{separator} {value[index]!r} at index "
                               f"{index} (of {len(value)})")
        return ConfigError(f"{name} must be {self.describe(high)}{reason}{separator} {value!r}")


def _first_refused(rule: Rule, value: Any) -> int | None:
    """The index of the first element of a `floats` value (a float: index 0) outside the rule; None if none."""
    one = Rule("float", rule.low, low_open=rule.low_open)
    values = value if isinstance(value, tuple) and value else (value,)
    return next((i for i, v in enumerate(values) if not one.accepts(v)), None)


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
            zero: str = "", choices: tuple[str, ...] = (), prefixes: tuple[str, ...] = (), pattern: str = "",
            pattern_text: str = "", non_empty: bool = False, note: str = "", required: bool = False,
            kind: str = "") -> Any:
    """A dataclass field declaring one setting (its kind follows the default's type unless `choices`)."""
    if not kind:
        kind = ("choice" if choices else "bool" if isinstance(default, bool) else "float" if isinstance(default, float)
                else "int" if isinstance(default, int) else "text" if isinstance(default, str) else "any")
    rule = Rule(kind, low, high, low_open, zero, tuple(choices), tuple(prefixes), pattern, pattern_text, non_empty,
                note)
    meta = {META_KEY: rule, "help": help, "required": required}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def same_as(cls: type, name: str, help: str = "") -> Any:
    """Another dataclass's declaration of the same setting (same default and range), e.g. a
    command's `data_dir` that is the config's `data_dir`; `help` may reword it for the command."""
    declared = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = {**declared.metadata, **({"help": help} if help else {})}
    return dataclasses.field(default=declared.default, metadata=meta)


def rule_of(cls_or_obj: Any, name: str) -> Rule | None:
    return {f.name: f for f in dataclasses.fields(cls_or_obj)}[name].metadata.get(META_KEY)


def declared_defaults(cls: type) -> dict[str, Any]:
    """Every field's default (factories called), by name."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return out


def check_field(obj: Any, name: str, high: float | None = None, why: str = "") -> None:
    """Raise ConfigError unless `obj.name` is in its declared range (`high` narrows the upper bound,
    `why` says why); a float setting given as an int becomes a float."""
    rule = rule_of(obj, name)
    if rule is None:
        return
    value = getattr(obj, name)
    if rule.kind == "floats":
        value = _as_floats(rule, name, value)
    if not rule.accepts(value, high):
        raise rule.error(name, value, high, why)
    if rule.kind in ("float", "floats"):
        setattr(obj, name, value if isinstance(value, tuple) else float(value))


def _as_floats(rule: Rule, name: str, value: Any) -> Any:
    """A `floats` setting's value in its one form, a float or a tuple: text parsed (`parse_floats`), a list
    or array made a tuple, ints made floats; anything else is left for `Rule.accepts` to refuse."""
    if isinstance(value, str):
        try:
            return parse_floats(value)
        except ValueError as err:
            raise ConfigError(f"{name} must be {rule.describe()}; {err}") from None
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):  # a numpy array or a tensor
        value = value.tolist()
    if isinstance(value, list | tuple):
        return tuple(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value)
    return value


def parse_floats(text: str) -> float | tuple[float, ...]:
    """The text of a `floats` setting: one number ("0.5") is a float; several, separated by commas or
    spaces, in brackets or not ("0.5,1 2", "[0.5, 1.0]"), are a tuple; "@PATH" reads a file holding such
    text (a JSON list too) or a numpy array (.npy), always a tuple."""
    text = text.strip()
    if text.startswith("@"):
        return _read_floats(Path(text[1:]))
    numbers = _split_floats(text)
    return numbers[0] if len(numbers) == 1 and re.fullmatch(r"[^\s,\[\]()]+", text) else numbers


def _split_floats(text: str) -> tuple[float, ...]:
    parts = [p for p in re.split(r"[\s,]+", text.strip().strip("[]()")) if p]
    if not parts:
        raise ValueError(f"expected numbers separated by commas or spaces, got {text[:80]!r}")
    numbers = []
    for i, part in enumerate(parts):
        try:
            numbers.append(float(part))
        except ValueError:
            raise ValueError(f"expected numbers separated by commas or spaces; item {i} is {part[:40]!r}") from None
    return tuple(numbers)


def _read_floats(path: Path) -> tuple[float, ...]:
    try:
        if path.suffix == ".npy":
            import numpy as np  # only here: the settings import cheaply

            values = tuple(float(v) for v in np.load(path, allow_pickle=False).reshape(-1).tolist())
            if not values:
                raise ValueError(f"{path} holds no numbers")
            return values
        return _split_floats(path.read_text())
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None


def _floats_flag(text: str) -> float | tuple[float, ...]:
    """`parse_floats` for argparse: its message, not argparse's generic 'invalid value'."""
    try:
        return parse_floats(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def check_fields(obj: Any) -> None:
    """Every declared field of the dataclass instance `obj`, in declaration order."""
    for f in dataclasses.fields(obj):
        check_field(obj, f.name)


def flag_help(f: dataclasses.Field, default: Any) -> str:
    rule = f.metadata.get(META_KEY)
    plain = rule is None or (rule.kind in ("text", "any", "bool") and not rule.pattern and not rule.non_empty)
    accepted = "" if plain else f"; {rule.describe()}"
    given = "required" if f.metadata.get("required") else f"default: {default!r}"
    return f"{f.metadata.get('help', '')} ({given}{accepted})".replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str, prefix: str = "",
              skip: tuple[str, ...] = (), only: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> None:
    """One `--field-name` flag per declared field of `cls` (dest `prefix + name`, None when not given).

    Flags left out stay None, so `picked_flags` returns only what the user set and the dataclass
    (or a config file) supplies the rest; `defaults` are what the caller fills in instead of the
    declared default (shown in the help). Tuple fields take several integers, bool fields true or
    false; dict fields are not flags.
    """
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip or (only and f.name not in only):
            continue
        default = (defaults or {}).get(f.name, declared_defaults(cls)[f.name])
        if isinstance(default, dict):
            continue
        flag, dest, rule = f"--{f.name.replace('_', '-')}", f"{prefix}{f.name}", f.metadata.get(META_KEY)
        read = text_reader(default, rule)
        if isinstance(default, bool):  # --name true|false (the MLproject passes a value for every flag)
            group.add_argument(flag, dest=dest, type=read, default=None, metavar="true|false",
                               help=flag_help(f, default))
        elif isinstance(default, tuple):
            group.add_argument(flag, dest=dest, type=read, nargs="*", default=None, help=flag_help(f, default))
        elif rule is not None and rule.kind == "floats":  # "0.5", "0.5,1.0,..." or "@file"
            group.add_argument(flag, dest=dest, type=_unset_if_empty(read), default=None,
                               metavar="FLOAT[,FLOAT...]|@FILE", help=flag_help(f, default))
        else:
            empty_is_unset = not isinstance(default, str) or (rule is not None and rule.kind == "choice")
            group.add_argument(flag, dest=dest, type=_unset_if_empty(read) if empty_is_unset else str,
                               default=None, required=bool(f.metadata.get("required")),
                               metavar=type(default).__name__.upper(), help=flag_help(f, default))


def text_reader(default: Any, rule: Rule | None) -> Callable[[str], Any]:
    """How a field's flag reads one command-line word: true/false for a bool, `parse_floats` for a
    `floats` rule, an integer per word of a tuple, else the default's type. `parse_field` reads
    text the same way, so a value means the same as a flag and in a field:value list."""
    if isinstance(default, bool):
        return parse_bool
    if rule is not None and rule.kind == "floats":
        return _floats_flag
    if isinstance(default, tuple):
        return int
    return type(default)


def parse_bool(text: str) -> bool | None:
    """true/false (also 1/0, yes/no, any case) for a bool flag; "" means not given (None)."""
    value = text.strip().lower()
    if value == "":
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _unset_if_empty(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag type for which an empty value means "not given" (None): the MLproject passes "" for
    the values a preset supplies, and "" is never a number or a choice."""
    def parse(text: str) -> Any:
        return None if text == "" else convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in its error messages
    return parse


def parse_field(cls: type, name: str, text: str) -> Any:
    """`text` as a value of `cls`'s field `name`, read as that field's flag reads it ("false" is False, "0.5,1" a
    tuple of floats); a ConfigError naming the field and what it accepts when the text is not such a value.
    Ranges stay with the dataclass, which checks them when built."""
    default, rule = declared_defaults(cls)[name], rule_of(cls, name)
    read = text_reader(default, rule)
    try:
        if isinstance(default, tuple):  # the words its flag takes, in one text
            return tuple(read(part) for part in re.split(r"[\s,]+", text.strip()) if part)
        value = read(text)
        if value is None:  # "" is an unset flag, not a value
            raise ValueError(text)
        return value
    except (ValueError, argparse.ArgumentTypeError):
        accepted = rule.describe() if rule is not None else f"a {type(default).__name__}"
        raise ConfigError(f"{name} must be {accepted}; got {text!r}") from None


def picked_flags(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The flags with `prefix` that were given, by field name."""
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}
