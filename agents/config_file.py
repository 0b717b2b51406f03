"""Run and grid settings from a YAML or TOML file (``textgym train --config run.yaml``).

A file is a flat mapping of option names (the config fields, ``snake_case`` or ``kebab-case``)
to values; ``textgym train`` also reads ``algo``, and ``textgym bench`` reads the fields of
:class:`~agents.bench.config.BenchConfig`. Options given on the command line override the file.
Unknown keys are refused with the valid ones listed, in the same words as an unknown option.

YAML 1.1 reads ``1e-5`` as a string (it wants ``1.0e-5``); a string where a field is a number
is therefore converted, and refused with the field's name when it is not one.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

SUFFIXES = (".yaml", ".yml", ".toml")


class ConfigFileError(ValueError):
    """A config file that cannot be read or holds a bad key; the message is one line."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.toml`` file, keys in ``snake_case``.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "run.toml"
    >>> _ = path.write_text('algo = "grpo"\\nlearning-rate = 1e-5\\n')
    >>> read_config_file(path)
    {'algo': 'grpo', 'learning_rate': 1e-05}
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigFileError(f"config file {path}: use a {', '.join(SUFFIXES)} file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"config file {path}: cannot read it ({exc})") from None
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - the tomli backport, declared for Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - each parser has its own error class
        first = str(exc).strip().splitlines()
        raise ConfigFileError(
            f"config file {path}: not valid {path.suffix[1:].upper()} ({' '.join(first)})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"config file {path}: expected a mapping of option names to values, "
            f"got {type(data).__name__}"
        )
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def coerce_fields(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` for dataclass ``cls``: unknown keys are refused with the valid ones listed, and
    a string given for a number field is converted (YAML reads ``1e-5`` as a string)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigFileError(
            f"{source}: unknown key(s) {unknown}; valid keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        kind = hints[name]
        if kind in (int, float) and isinstance(value, str):
            try:
                out[name] = kind(value)
            except ValueError:
                raise ConfigFileError(
                    f"{source}: {name} must be {'an int' if kind is int else 'a number'}, "
                    f"got {value!r}"
                ) from None
    return out
