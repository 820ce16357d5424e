"""Command-line flags declared on dataclass fields.

A flag's name, default, help and parsing live on the field it sets, so the parser, the
config built in code and the config read back from a manifest or checkpoint cannot drift
apart. `openwit curate` (pipeline/config.py and the stage configs it nests) and `openwit
train` (trainer/config.py) both use it:

    seed: int = opt(0, "seed of the balancing draw")
    concurrency: int = opt(64, "downloads in flight per worker", flag="--download-concurrency")
    read: ReadConfig = nested(ReadConfig, group="input")

add_flags() puts one argument per such field on a parser; build() turns the parsed values
back into the dataclass (whose __post_init__ validates); from_dict() rebuilds one from
dataclasses.asdict() output read back from JSON; to_argv() writes the flags of a config
built in code, for the record.
"""
from __future__ import annotations

import argparse
import functools
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Optional

_KEY = "openwit.flag"  # the metadata key of a field's Flag


@dataclass(frozen=True)
class Flag:
    help: Optional[str] = None
    flag: Optional[str] = None  # default: --field-name
    type: Optional[Callable] = None  # argparse type; default: the type of the field's default
    parse: Optional[Callable[[str], Any]] = None  # the given text -> the field's value; ValueError: bad value
    choices: Optional[tuple] = None
    metavar: Optional[str] = None
    append: bool = False  # repeatable; the values become a tuple
    required: bool = False
    group: Optional[str] = None  # the help group (add_flags); nested fields inherit their parent's
    exclusive: Optional[str] = None  # fields with the same key are mutually exclusive
    show_default: bool = False  # end the help with "(default: ...)"


def opt(default=MISSING, help_text: Optional[str] = None, **flag) -> Any:
    """A dataclass field that is also a flag (keyword arguments: those of Flag)."""
    return field(default=default, metadata={_KEY: Flag(help=help_text, **flag)})


def nested(config_class, group: Optional[str] = None) -> Any:
    """A nested config whose flags join its parent's, in `group` unless they name their own."""
    return field(default_factory=config_class, metadata={_KEY: Flag(group=group)})


def _is_nested(f) -> bool:
    return is_dataclass(f.default_factory)


def flagged(cls, prefix: tuple = (), group: Optional[str] = None):
    """(dotted path, field, Flag, group) of every flag of cls, nested configs in place."""
    for f in fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None:
            continue
        path = prefix + (f.name,)
        if _is_nested(f):
            yield from flagged(f.default_factory, path, spec.group or group)
        else:
            yield ".".join(path), f, spec, spec.group or group


def flag_name(f, spec: Flag) -> str:
    return spec.flag or "--" + f.name.replace("_", "-")


def add_flags(container, cls, group: Optional[str] = None) -> None:
    """Add the flags of cls whose help group is `group` to a parser or argument group, in
    field order. Each argument's dest is its field's dotted path (download.timeout)."""
    exclusive = {}
    for dest, f, spec, field_group in flagged(cls):
        if field_group != group:
            continue
        target = container
        if spec.exclusive:
            if spec.exclusive not in exclusive:
                exclusive[spec.exclusive] = container.add_mutually_exclusive_group()
            target = exclusive[spec.exclusive]
        target.add_argument(flag_name(f, spec), dest=dest, **_argument(f, spec))


def _argument(f, spec: Flag) -> dict:
    """add_argument's keywords for one field."""
    default = None if f.default is MISSING else f.default
    help_text = spec.help + " (default: %(default)s)" if spec.show_default else spec.help
    if isinstance(default, bool):  # a switch; a field that defaults to True is a --no-... flag
        return {"action": "store_false" if default else "store_true", "help": help_text}
    kwargs = {"help": help_text, "required": spec.required, "choices": spec.choices,
              # parsed and repeated flags start at None: not given means the field's default
              "default": None if spec.parse or spec.append else default}
    if spec.append:
        kwargs["action"] = "append"
    if spec.choices is None:  # argparse shows {a,b} for choices; otherwise the name the old flags had
        kwargs["metavar"] = spec.metavar or flag_name(f, spec).lstrip("-").upper().replace("-", "_")
    if spec.parse is None and spec.choices is None and not spec.append:
        kwargs["type"] = spec.type or (type(default) if default is not None else None)
    return kwargs


def build(cls, values: dict, prefix: tuple = ()):
    """cls from parsed values (vars() of the namespace), nested configs included. A bad value
    raises ValueError, as does the dataclasses' own validation."""
    kwargs = {}
    for f in fields(cls):
        spec = f.metadata.get(_KEY)
        path = prefix + (f.name,)
        if spec is None:
            continue
        if _is_nested(f):
            kwargs[f.name] = build(f.default_factory, values, path)
            continue
        dest = ".".join(path)
        if dest not in values or (values[dest] is None and (spec.parse or spec.append)):
            continue  # not given: the field's default
        kwargs[f.name] = _value(values[dest], f, spec)
    return cls(**kwargs)


def _value(value, f, spec: Flag):
    if spec.append:
        return tuple(value)
    if spec.parse is None:
        return value
    try:
        return spec.parse(value)
    except ValueError as err:
        raise ValueError(f"{flag_name(f, spec)}: {err}") from err


def parsed(parser: argparse.ArgumentParser, cls, args: argparse.Namespace):
    """build() for a command line: a ValueError ends it as a usage error (exit 2, the message)."""
    try:
        return build(cls, vars(args))
    except ValueError as err:
        parser.error(str(err))


def from_dict(cls, values: dict):
    """cls from dataclasses.asdict() output read back from JSON: nested dicts become nested
    configs and lists tuples; keys this version lacks are ignored, missing ones default."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if _is_nested(f) and isinstance(value, dict):
            value = from_dict(f.default_factory, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def to_argv(config, first: tuple = ()) -> list[str]:
    """The flags that set config's values: the dotted paths in `first`, in that order, then
    every other flag whose value differs from its default. For the record of a config built
    in code (the demo's manifest); parsed values (a --languages list, ...) cannot be written back."""
    specs = {dest: (f, spec) for dest, f, spec, _ in flagged(type(config))}
    value = {dest: functools.reduce(getattr, dest.split("."), config) for dest in specs}
    rest = [dest for dest, (f, _) in specs.items() if dest not in first and value[dest] != f.default]
    argv = []
    for dest in list(first) + rest:
        argv += _flag_argv(value[dest], *specs[dest])
    return argv


def _flag_argv(value, f, spec: Flag) -> list[str]:
    name = flag_name(f, spec)
    if isinstance(f.default, bool):
        return [name] if value != f.default else []
    if spec.append:
        return [word for item in value for word in (name, str(item))]
    if spec.parse is not None and value != f.default:
        raise ValueError(f"{name} cannot be written back from its parsed value {value!r}")
    if value is None or spec.parse is not None:
        return []
    # 5.0 -> "5", as a person writes it; any other float keeps its exact repr
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return [name, text]


# ------------------------------------------------------------------ parsers of flag values


def comma_list(value: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'); '' -> ()."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def lower_comma_list(value: str) -> tuple[str, ...]:
    return comma_list(value.lower())


def language_codes(value: str) -> tuple[str, ...]:
    """'en,de' -> ('en', 'de'); 'all' (or empty) -> (), which keeps every language."""
    items = comma_list(value)
    if "all" in items and len(items) > 1:
        raise ValueError("'all' keeps every language; list codes or 'all', not both")
    return () if items in ((), ("all",)) else items


def lines_file(path) -> list[str]:
    """The lines of a list file, stripped, without blank and '#' comment lines; no path: []."""
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def terms_file(path: str) -> tuple[str, ...]:
    """Lower-case terms of a file, one a line, inner spaces collapsed; no path: ()."""
    return tuple(" ".join(line.lower().split()) for line in lines_file(path))
