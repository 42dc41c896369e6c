"""Typed configuration: YAML recipes parsed into pydantic models."""

from polymodal.config.base import (
    Config,
    ConfigError,
    apply_overrides,
    flatten_config,
    format_validation_errors,
    load_config,
    load_yaml,
    override_key,
)

__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "flatten_config",
    "format_validation_errors",
    "load_config",
    "load_yaml",
    "override_key",
]
