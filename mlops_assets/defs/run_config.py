"""Run config classes generated from the plain settings dataclasses of ``lib``.

A ``lib`` dataclass owns its settings, their defaults and descriptions (a field is a setting
when its metadata has a ``description``); the launchpad's config class is derived from it, so
the defaults are written once and a changed setting changes the UI with it.
"""

import dataclasses
from typing import Any, get_type_hints

import dagster as dg
from pydantic import Field, create_model


def _config_fields(parameters: type) -> dict[str, Any]:
    """Pydantic fields of the dataclass fields that carry a ``description`` in their metadata."""
    hints = get_type_hints(parameters)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(parameters):
        if "description" not in spec.metadata:
            continue  # internal: not a setting
        if spec.default is dataclasses.MISSING:
            raise TypeError(f"{parameters.__name__}.{spec.name} needs a default value")
        fields[spec.name] = (
            hints[spec.name],
            Field(default=spec.default, description=spec.metadata["description"]),
        )
    return fields


def config_from(parameters: type, name: str, doc: str, module: str, **extra: Any) -> Any:
    """A ``dg.Config`` class with one described field per setting of ``parameters``.

    ``extra`` adds fields of the config's own, as ``name=(type, Field(...))``.
    """
    fields = {**_config_fields(parameters), **extra}
    return create_model(name, __base__=dg.Config, __doc__=doc, __module__=module, **fields)
