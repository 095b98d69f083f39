"""YAML configs validated by typed models, with ``--set key.path=value`` overrides.

The curation config and the trainer's data config load through :func:`load_yaml_config`, so
both report a bad key the same way: one :class:`ConfigError` that names it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    pass


def _format_validation(e: ValidationError, what: str = "config") -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        else:
            lines.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
    return f"invalid {what}: " + "; ".join(lines)


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` to nested dict ``data`` (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form section.key=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML ({e})") from e
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {assignment!r}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def load_yaml_config(model: type[BaseModel], path: Optional[str | Path] = None, overrides: list[str] = (),
                     what: str = "config", section: Optional[str] = None, **top: Any) -> Any:
    """Validate YAML (or nothing: the defaults) + ``--set`` overrides + top-level values against
    ``model``; every problem becomes one ConfigError naming the key. A file holding only a
    ``section:`` mapping (e.g. ``data:``) is unwrapped."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{what} file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{what} file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{what} file {p} must hold a mapping at the top level")
        if section is not None and set(data) == {section} and isinstance(data[section], dict):
            data = data[section]
    for o in overrides:
        apply_override(data, o)
    for k, v in top.items():
        if v is not None:
            data[k] = v
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, what)) from None
