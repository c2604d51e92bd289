"""An example plug-in connector (`type: plugin`), as a company would write one: points kept in the
plug-in's options, found by email. The data-map tests load it through `factory:`."""

from dataclasses import dataclass, field

from mineos_integration.sources.base import (
    DeletionResult,
    ExportSink,
    PreviewProperty,
    SourceConfig,
    SourceContext,
)
from mineos_integration.sources.plugin import PluginSourceConfig


@dataclass
class PointsSource:
    config: SourceConfig
    points: dict[str, int] = field(default_factory=dict)

    def count(self, identity_value: str) -> int:
        return int(identity_value in self.points)

    def export(self, identity_value: str, sink: ExportSink) -> None:
        if identity_value in self.points:
            sink.write_records([{"points": self.points[identity_value]}])

    def delete(self, identity_value: str) -> DeletionResult:
        found = self.count(identity_value)
        self.points.pop(identity_value, None)
        return DeletionResult(found=found, changed=found, remaining=self.count(identity_value))

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        if identity_value not in self.points:
            return []
        return [PreviewProperty(name="Points", value=str(self.points[identity_value]))]


def build_source(config: PluginSourceConfig, context: SourceContext) -> PointsSource:
    """The factory the data map names: `factory: "tests.plugin_example:build_source"`."""
    return PointsSource(config=config, points=dict(config.options.get("points", {})))


def build_nothing(config: PluginSourceConfig, context: SourceContext) -> object:
    """A broken factory: returns something that is not a DataSource."""
    return object()
