"""Named fit presets: partial FitConfig dicts stored as JSON files beside this module (configs as data).

``mmckd fit --preset NAME`` applies one over the defaults, before ``--config FILE`` and the options given on
the command line. A preset's ``_about`` says what it is for and where its values come from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmckd.config_fields import ConfigError

_HERE = Path(__file__).parent


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in _HERE.glob("*.json")))


def _read(name: str) -> dict[str, Any]:
    """The preset file's JSON; ConfigError for an unknown name."""
    if name not in preset_names():
        raise ConfigError(f"no preset {name!r}; choose from {', '.join(preset_names())}")
    return json.loads((_HERE / f"{name}.json").read_text(encoding="utf-8"))


def preset(name: str) -> dict[str, Any]:
    """The preset's overrides (its ``_about`` removed)."""
    data = _read(name)
    data.pop("_about", None)
    return data


def preset_about(name: str) -> str:
    """What the preset is for and where its values come from."""
    return str(_read(name).get("_about", ""))
