"""Click options generated from a configuration's fields, so every field is settable and none can drift.

``config_options(FitConfig, prefixes={"model": ""})`` adds one option per leaf field (name, type, bounds,
choices and help come from the field's declaration, see ``mmckd.config_fields``); ``given_overrides`` turns
the options the user actually gave into a nested dict, applied over the base configuration (defaults, a
preset, ``--config FILE``, or the stored run on ``--resume``). Every generated option defaults to "not given",
so the base decides what is not on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mmckd.config_fields import Config, FieldSpec

F = TypeVar("F", bound=Callable[..., Any])
_SEP = "__"  # joins a nested field's path into its option's Python name


def _names(path: tuple[str, ...], prefixes: dict[str, str]) -> str:
    """The option's long name: nested sections contribute their prefix (the section's name unless prefixes
    says otherwise; "" for none)."""
    parts = [prefixes.get(p, p) for p in path[:-1]] + [path[-1]]
    return "--" + "-".join(p for p in parts if p).replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else '""'
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _sequence_callback(spec: FieldSpec) -> Callable:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None):
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        try:
            parsed = tuple(spec.kind(v) for v in items)
        except ValueError:
            what = {int: "integers", float: "numbers"}.get(spec.kind, "values")
            raise click.BadParameter(f"expected comma-separated {what}, got {value!r}") from None
        if spec.choices is not None:
            for v in parsed:
                if v not in spec.choices:
                    raise click.BadParameter(f"{v!r} is not one of {', '.join(map(str, spec.choices))}")
        return parsed

    return parse


def _number_type(spec: FieldSpec) -> click.ParamType:
    if spec.low is None and spec.high is None:
        return click.INT if spec.kind is int else click.FLOAT
    if spec.kind is int:
        low = None if spec.low is None else int(spec.low)
        high = None if spec.high is None else int(spec.high)
        return click.IntRange(min=low, max=high, min_open=spec.low_open, max_open=spec.high_open)
    return click.FloatRange(min=spec.low, max=spec.high, min_open=spec.low_open, max_open=spec.high_open)


def _option(path: tuple[str, ...], spec: FieldSpec, prefixes: dict[str, str]) -> Callable[[F], F]:
    name = _names(path, prefixes)
    dest = _SEP.join(path)
    help_text = f"{spec.help} [default: {_show(spec.default)}]"
    if spec.kind is bool and not spec.sequence:
        decls = [f"{n}/--no-{n[2:]}" for n in (name, *spec.cli)]
        return click.option(*decls, dest, default=None, help=help_text)
    names = [name, *spec.cli]
    if spec.sequence:
        return click.option(
            *names, dest, default=None, metavar="A,B,...", callback=_sequence_callback(spec), help=help_text
        )
    if spec.choices is not None:
        return click.option(
            *names, dest, type=click.Choice([str(c) for c in spec.choices]), default=None, help=help_text
        )
    if spec.kind in (int, float):
        return click.option(*names, dest, type=_number_type(spec), default=None, help=help_text)
    return click.option(*names, dest, type=str, default=None, help=help_text)


def config_options(
    cls: type[Config], prefixes: dict[str, str] | None = None, skip: tuple[str, ...] = ()
) -> Callable[[F], F]:
    """A decorator adding one option per leaf field of cls (fields named in skip, as "section.name" or "name",
    are left out: the command offers them its own way)."""
    prefixes = prefixes or {}
    specs = [(path, spec) for path, spec in cls.walk() if ".".join(path) not in skip]

    def decorate(f: F) -> F:
        for path, spec in reversed(specs):  # click lists options in decoration order, bottom-up
            f = _option(path, spec, prefixes)(f)
        return f

    return decorate


def config_file_option(help_text: str) -> Callable[[F], F]:
    """``--config FILE`` (Python name ``config_file``): the settings file the command applies under its options."""
    path = click.Path(dir_okay=False, exists=True, path_type=Path)
    return click.option("--config", "config_file", type=path, default=None, help=help_text)


def given_overrides(cls: type[Config], options: dict[str, Any]) -> dict[str, Any]:
    """Pop cls's generated options out of a command's keyword arguments; the nested dict of those given."""
    out: dict[str, Any] = {}
    for path, _spec in cls.walk():
        value = options.pop(_SEP.join(path), None)
        if value is None:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = list(value) if isinstance(value, tuple) else value
    return out
