"""The one configuration layer: strict frozen dataclasses whose fields declare their own help, choices and bounds.

Every configuration of mmckd (the extractor's sections, the model, the training run) is a ``Config``
dataclass whose fields are made with ``option()``::

    @dataclass(frozen=True)
    class VisionConfig(Config):
        fps: float = option(25.0, "Vision frame rate (frames sampled per second).", low=0, low_open=True)

From the declarations alone the base class

- validates every instance (``ConfigError`` naming the option: wrong type, not one of the choices, out of
  bounds), then calls the class's ``validate()`` for rules across fields;
- converts to and from JSON-able dicts (``to_dict``/``from_dict``: nested configurations by their field type,
  tuples as lists, unknown keys refused, missing keys take the default);
- describes itself to the command line (``mmckd.cli.config_options`` generates one click option per field, so
  none can be forgotten or drift from the field).

``absent``: a field added after files were written with its class declares the value that reproduces what those
files were made with. A dict without the key reads as that value, and ``to_dict`` leaves the field out while it
holds that value, so the JSON (and its hash, stored in feature files and bundles) of every configuration that
could be written before the field existed is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

_NOT_SET: Any = object()
C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """An option has a value mmckd cannot use; the message names the option."""


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: tuple | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    absent: Any = _NOT_SET,
    cli: tuple[str, ...] = (),
    factory: Any = MISSING,
) -> Any:
    """A configuration field: its default, help line, allowed values and bounds (for numbers, and for every
    item of a tuple), ``absent`` (see the module docstring) and extra command-line names (``cli``, e.g.
    ``("--lambda",)`` beside the generated ``--lambda-mvsc``). ``factory`` makes the default of a nested
    configuration."""
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "absent": absent,
        "cli": tuple(cli),
    }
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a configuration field declares, as the validators and the command line read it."""

    name: str
    kind: Any  # int, float, bool, str, or a Config subclass
    sequence: bool  # a tuple of kind
    optional: bool  # None allowed
    default: Any
    help: str
    choices: tuple | None
    low: float | None
    high: float | None
    low_open: bool
    high_open: bool
    absent: Any
    cli: tuple[str, ...]

    @property
    def nested(self) -> bool:
        return isinstance(self.kind, type) and issubclass(self.kind, Config)

    @property
    def has_absent(self) -> bool:
        return self.absent is not _NOT_SET

    def bounds_text(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


def _unwrap(hint: Any) -> tuple[type, bool, bool]:
    """(item type, is a tuple, allows None) of a field's type hint."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"unsupported configuration field type {hint!r}")
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin is tuple:
        return typing.get_args(hint)[0], True, optional
    return hint, False, optional


class Config:
    """Base of every configuration dataclass (subclasses are ``@dataclass(frozen=True)``)."""

    stored_as = ""
    """The key under which run folders and bundles store this configuration ("fit_config", ...); a subclass
    sets it when it is stored so."""

    @classmethod
    def specs(cls) -> tuple[FieldSpec, ...]:
        return _specs(cls)  # type: ignore[arg-type]  # classes are hashable

    def __post_init__(self) -> None:
        for spec in self.specs():
            object.__setattr__(self, spec.name, _checked(spec, getattr(self, spec.name), type(self).__name__))
        self.validate()

    def validate(self) -> None:
        """Rules across fields (a subclass overrides it; raise ConfigError naming the options)."""

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: nested configurations as dicts, tuples as lists; a field at its ``absent`` value is
        left out (files written before it existed keep their JSON and hash)."""
        out: dict[str, Any] = {}
        for spec in self.specs():
            value = getattr(self, spec.name)
            if spec.has_absent and value == spec.absent:
                continue
            if spec.nested:
                value = value.to_dict()
            elif spec.sequence:
                value = list(value)
            out[spec.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], data: Any) -> C:
        """The configuration of a dict (as ``to_dict`` makes, or a part of one: missing keys take their
        default, or their ``absent`` value); unknown keys and wrong values raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        specs = {s.name: s for s in cls.specs()}
        unknown = sorted(set(data) - set(specs))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown option(s) {unknown}")
        kwargs: dict[str, Any] = {}
        for name, spec in specs.items():
            if name in data:
                value = data[name]
                if spec.nested and isinstance(value, dict):
                    try:
                        value = spec.kind.from_dict(value)
                    except ConfigError as e:
                        raise ConfigError(f"{name}: {e}") from None
                kwargs[name] = value
            elif spec.has_absent:
                kwargs[name] = spec.absent
        return cls(**kwargs)

    @classmethod
    def overrides_in(cls, data: dict[str, Any], source: str) -> dict[str, Any]:
        """The part of a configuration file's JSON that configures cls: the JSON itself (a partial cls dict) or,
        in a file that stores one (a run's run.json, a bundle.json), its ``stored_as`` entry. Checked now
        (unknown keys, bad values): ConfigError naming source."""
        if cls.stored_as and cls.stored_as in data:
            data = data[cls.stored_as]
            if not isinstance(data, dict):
                raise ConfigError(f"{source}: {cls.stored_as} is not a JSON object")
        try:
            cls().merged(data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        return data

    def merged(self: C, overrides: dict[str, Any]) -> C:
        """This configuration with the (possibly partial, possibly nested) dict of overrides applied."""
        return type(self).from_dict(merge_dicts(self.to_dict(), overrides))

    @classmethod
    def walk(cls, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldSpec]]:
        """Every leaf field, with the path of nested field names that leads to it."""
        for spec in cls.specs():
            if spec.nested:
                yield from spec.kind.walk((*prefix, spec.name))
            else:
                yield (*prefix, spec.name), spec


def merge_dicts(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """base with overrides applied key by key, nested dicts merged rather than replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a configuration file; ConfigError naming the file when it is unreadable or not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@cache
def _specs(cls: type) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        kind, sequence, optional = _unwrap(hints[f.name])
        meta = f.metadata
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append(
            FieldSpec(
                name=f.name,
                kind=kind,
                sequence=sequence,
                optional=optional,
                default=default,
                help=meta.get("help", ""),
                choices=meta.get("choices"),
                low=meta.get("low"),
                high=meta.get("high"),
                low_open=meta.get("low_open", False),
                high_open=meta.get("high_open", False),
                absent=meta.get("absent", _NOT_SET),
                cli=meta.get("cli", ()),
            )
        )
    return tuple(out)


_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _checked(spec: FieldSpec, value: Any, owner: str) -> Any:
    """value converted to the field's type (lists to tuples, ints to floats) and checked, or ConfigError."""
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{spec.name} must be set (got null)")
    if spec.nested:
        if not isinstance(value, spec.kind):
            raise ConfigError(f"{spec.name} must be a {spec.kind.__name__} object; got {type(value).__name__}")
        return value
    if spec.sequence:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{spec.name} must be a list of {_plural(spec.kind)}; got {value!r}")
        items = tuple(_scalar(spec, v, f"{spec.name} items") for v in value)
        for v in items:
            _check_value(spec, v, f"{spec.name} items")
        return items
    value = _scalar(spec, value, spec.name)
    _check_value(spec, value, spec.name)
    return value


def _scalar(spec: FieldSpec, value: Any, what: str) -> Any:
    kind = spec.kind
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{what} must be {_KIND_WORDS.get(kind, kind.__name__)}; got {value!r}")
    if kind is float:
        value = float(value)
        if value != value:
            raise ConfigError(f"{what} must be a number; got NaN")
    return value


def _check_value(spec: FieldSpec, value: Any, what: str) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{what} must be one of {', '.join(map(str, spec.choices))}; got {value!r}")
    if spec.kind in (int, float):
        too_low = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
        too_high = spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high)
        if too_low or too_high:
            raise ConfigError(f"{what} must be {spec.bounds_text()}; got {value!r}")


def _plural(kind: type) -> str:
    return {int: "integers", float: "numbers", bool: "booleans", str: "strings"}.get(kind, kind.__name__)
