"""Typed configuration: YAML files + a dataclass schema + dotted command-line overrides.

Every package describes its configuration as (nested) dataclasses; this module loads a YAML file onto that schema with
omegaconf, applies ``key.sub=value`` overrides from the command line, validates types, and returns a plain dataclass
instance. Errors name the offending key, say where it came from (which file, or the command line) and list the keys that
exist, so a typo such as ``trainer.max_step=10`` fails at once instead of being silently ignored.

Example::

    @dataclass
    class Train:
        lr: float = 1e-4
        steps: int = 1000

    cfg = load_config(Train, "configs/tiny.yaml", ["steps=10"])
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

from genblocks.errors import FieldError, InputError

__all__ = [
    "ConfigError",
    "config_keys",
    "config_to_yaml",
    "load_config",
    "load_shipped_config",
    "merge_config",
    "read_yaml",
]

T = TypeVar("T")


class ConfigError(InputError):
    """A configuration value or key that does not fit the schema; the message names the key."""


def config_keys(schema: type) -> dict[str, Any]:
    """Every leaf key of a (nested) dataclass schema, dotted, with its annotated type: ``{"train.lr": float, ...}``."""
    keys: dict[str, Any] = {}

    def walk(node: type, prefix: str) -> None:
        hints = typing.get_type_hints(node)
        for item in dataclasses.fields(node):
            kind = hints.get(item.name, item.type)
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{item.name}.")
            else:
                keys[f"{prefix}{item.name}"] = kind

    walk(schema, "")
    return keys


def _sections(schema: type, prefix: str = "") -> list[str]:
    """Dotted keys of the nested dataclass sections of ``schema``, each after the sections inside it."""
    hints = typing.get_type_hints(schema)
    found: list[str] = []
    for item in dataclasses.fields(schema):
        kind = hints.get(item.name, item.type)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found += [*_sections(kind, f"{prefix}{item.name}."), f"{prefix}{item.name}"]
    return found


def _field_key(error: FieldError, merged: DictConfig, schema: type) -> str:
    """The full dotted key of the field behind ``error``, raised while building the config ``merged``.

    A shared section schema (genblocks' ``TrainConfig`` under ``train:`` or FG-Net's ``training:``) names only its own
    field; each section is built alone, innermost first, and the first one that raises is where the field sits.
    """
    for section in _sections(schema):
        try:
            OmegaConf.to_object(OmegaConf.select(merged, section))
        except FieldError as inner:
            return f"{section}.{inner.field}"
        except (ValueError, TypeError):
            continue
    return error.field


def _type_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def _nearest_keys(schema: type, full_key: str) -> list[str]:
    """Up to three valid dotted keys closest to ``full_key``: by the whole path, then by its last part."""
    keys = list(config_keys(schema))
    close = difflib.get_close_matches(full_key, keys, n=3, cutoff=0.6)
    leaf = full_key.rsplit(".", 1)[-1]
    by_leaf = {key.rsplit(".", 1)[-1]: key for key in keys}
    # a leaf that contains the typed word (``steps`` -> ``num_inference_steps``) is a better guess than a look-alike
    within = [key for name, key in by_leaf.items() if len(leaf) >= 4 and leaf in name]
    within.sort(key=lambda key: (key.rsplit(".", 1)[0] != full_key.rsplit(".", 1)[0], key))
    close = within + close
    close += [by_leaf[name] for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.7)]
    return list(dict.fromkeys(close))[:3]


def _explain(error: Exception, schema: type, source: str, data: Any = None) -> ConfigError:
    full_key = str(getattr(error, "full_key", "") or getattr(error, "key", "") or "")
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        near = _nearest_keys(schema, full_key)
        hint = f"; nearest valid keys: {', '.join(near)}" if near else ""
        return ConfigError(f"{source}: unknown config key '{full_key}'{hint}")
    if isinstance(error, MissingMandatoryValue):
        return ConfigError(f"{source}: config key '{full_key}' is required but has no value")
    if isinstance(error, ValidationError):
        expected = config_keys(schema).get(full_key)
        value = OmegaConf.select(data, full_key, default=None) if isinstance(data, DictConfig) else None
        shown = f" = {OmegaConf.to_container(value) if OmegaConf.is_config(value) else value!r}"
        expect = f"; expected {_type_name(expected)}" if expected is not None else ""
        reason = str(error).splitlines()[0]
        return ConfigError(f"{source}: config key '{full_key}'{shown} has the wrong type{expect} ({reason})")
    return ConfigError(f"{source}: {error}")


def read_yaml(path: str | Path) -> DictConfig:
    """A YAML mapping file as a ``DictConfig``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file is not valid YAML (the message gives the line) or holds no mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got a list")
    return loaded


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    bad = [item for item in overrides if "=" not in item or item.startswith("=")]
    if bad:
        raise ConfigError(f"command line: overrides must look like key.sub=value, got {bad}")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"command line: an override value is not valid YAML ({problem}): {list(overrides)}"
        ) from None


def merge_config(schema: type[T], *sources: tuple[str, Any]) -> T:
    """Merge (label, mapping-or-DictConfig) sources onto ``schema`` in order and return the dataclass instance.

    Args:
        schema: a dataclass type (possibly nested) whose fields have types and defaults.
        *sources: ``(label, data)`` pairs; ``label`` names the source in error messages.

    Returns:
        An instance of ``schema``.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a required value left unset.
    """
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    merged = OmegaConf.structured(schema)
    for label, data in sources:
        try:
            merged = OmegaConf.merge(merged, data)
        except (ConfigKeyError, ConfigAttributeError, ValidationError) as error:
            raise _explain(error, schema, label, OmegaConf.create(data) if isinstance(data, dict) else data) from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (MissingMandatoryValue, ValidationError) as error:
        raise _explain(error, schema, "config") from None
    except ConfigError:
        raise
    except FieldError as error:
        raise ConfigError(f"config: {_field_key(error, merged, schema)}: {error.expected}") from None
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config: {error}") from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load a YAML file onto a dataclass schema and apply dotted overrides.

    Args:
        schema: the dataclass type describing the configuration.
        path: a YAML file, or ``None`` for the schema's defaults.
        overrides: ``"key.sub=value"`` strings, applied after the file (YAML syntax for values: ``lr=1e-4``,
            ``sizes=[1,2]``).

    Returns:
        An instance of ``schema``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: an unknown key, a wrongly typed value, a malformed override, or a required value left unset.
    """
    sources: list[tuple[str, Any]] = []
    if path is not None:
        sources.append((str(path), read_yaml(path)))
    if overrides:
        sources.append(("command line", _parse_overrides(overrides)))
    return merge_config(schema, *sources)


def load_shipped_config(schema: type[T], package: str, name: str, group: str | None = None) -> T:
    """A config shipped inside an installed package, ``<package>/configs/[<group>/]<name>.yaml``, loaded onto
    ``schema``: what a package's ``tiny_config()`` / ``paper_config()`` return (the YAML file is the one source of
    truth, so the Python presets and ``--config NAME`` cannot drift apart).

    Args:
        schema: The package's config dataclass.
        package: Its import name (``"x_portrait"``).
        name: The bare config name (``"tiny"``, ``"paper"``).
        group: A folder under ``configs/`` (packages whose commands ship different configs); ``None``: ``configs/``.

    Raises:
        ConfigError: no such shipped file (the message lists the names there are), or a file that does not fit.
    """
    folder = resources.files(package) / "configs"
    if group is not None:
        folder = folder / group
    resource = folder / f"{name}.yaml"
    if not resource.is_file():
        shipped = (
            sorted(e.name.rsplit(".", 1)[0] for e in folder.iterdir() if e.name.endswith(".yaml"))
            if folder.is_dir()
            else []
        )
        where = f"configs/{group}/" if group is not None else "configs/"
        raise ConfigError(
            f"{package}: no shipped config {name!r} in {where} (shipped: {', '.join(shipped) or 'none'})"
        )
    with resources.as_file(resource) as path:
        return load_config(schema, path)


def config_to_yaml(config: Any) -> str:
    """Serialise a config dataclass instance to YAML (what a run records next to its outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
