"""`type: plugin`: a company's own connector, added without forking this project.

    - name: loyalty
      type: plugin
      identity: $internalId
      factory: "acme_privacy.loyalty:build_source"
      options: {base_url: "https://loyalty.internal", token_env: LOYALTY_TOKEN}

`factory` names a function in an importable module (installed in the image, or on PYTHONPATH). It is
imported when the data map is loaded, so a typo fails at start-up with the line, and called once by
`build_sources` as

    factory(config: PluginSourceConfig, context: SourceContext) -> DataSource

`config.options` are the plug-in's own settings (secrets by env var name: `secret_from_env`), `context`
carries the shared clients, the anonymisation key and the timeout. The result must implement
`DataSource` (sources/base.py): count, export, delete, preview, raising `SourceError` on failure.
"""

import importlib
from collections.abc import Callable
from typing import Any, Literal, cast

from pydantic import Field, field_validator

from mineos_integration.datamap import DataMapError
from mineos_integration.sources.base import DataSource, SourceConfig, SourceContext

PluginFactory = Callable[["PluginSourceConfig", SourceContext], DataSource]


class PluginSourceConfig(SourceConfig):
    type: Literal["plugin"] = "plugin"
    factory: str = Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")  # "package.module:function"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _factory_is_importable(cls, reference: str) -> str:
        load_factory(reference)
        return reference

    def build(self, context: SourceContext) -> DataSource:
        """Call the plug-in's factory; raises DataMapError if it does not return a DataSource."""
        source = load_factory(self.factory)(self, context)
        if not isinstance(source, DataSource):
            raise DataMapError(
                f"source {self.name!r}: plug-in factory {self.factory} returned {type(source).__name__}, "
                "not a DataSource (count, export, delete, preview and a config attribute)"
            )
        return source


def load_factory(reference: str) -> PluginFactory:
    """Import `package.module:function`.

    Raises:
        ValueError: the module cannot be imported or has no such callable.
    """
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises while importing
        raise ValueError(f"cannot import {module_name!r}: {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"module {module_name!r} has no function {attribute!r}")
    return cast(PluginFactory, factory)
