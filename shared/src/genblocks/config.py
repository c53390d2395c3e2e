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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

__all__ = ["ConfigError", "config_to_yaml", "load_config", "merge_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key that does not fit the schema; the message names the key."""


def _known_keys(schema_node: DictConfig, full_key: str) -> list[str]:
    parent_path = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema_node, parent_path) if parent_path else schema_node
    return sorted(str(k) for k in node) if isinstance(node, DictConfig) else []


def _explain(error: Exception, schema_node: DictConfig, source: str) -> ConfigError:
    full_key = str(getattr(error, "full_key", "") or getattr(error, "key", "") or "")
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        known = _known_keys(schema_node, full_key)
        leaf = full_key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return ConfigError(f"{source}: unknown config key '{full_key}' (known keys here: {', '.join(known)}){hint}")
    if isinstance(error, MissingMandatoryValue):
        return ConfigError(f"{source}: config key '{full_key}' is required but has no value")
    if isinstance(error, ValidationError):
        reason = str(error).splitlines()[0]
        return ConfigError(f"{source}: config key '{full_key}' has a value of the wrong type: {reason}")
    return ConfigError(f"{source}: {error}")


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
    base = OmegaConf.structured(schema)
    merged = base
    for label, data in sources:
        try:
            merged = OmegaConf.merge(merged, data)
        except (ConfigKeyError, ConfigAttributeError, ValidationError) as error:
            raise _explain(error, base, label) from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (MissingMandatoryValue, ValidationError) as error:
        raise _explain(error, base, "config") from None


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
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = OmegaConf.load(path)
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: expected a mapping at the top level, got a list")
        sources.append((str(path), loaded))
    bad = [item for item in overrides if "=" not in item or item.startswith("=")]
    if bad:
        raise ConfigError(f"command line: overrides must look like key.sub=value, got {bad}")
    if overrides:
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    return merge_config(schema, *sources)


def config_to_yaml(config: Any) -> str:
    """Serialise a config dataclass instance to YAML (what a run records next to its outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
