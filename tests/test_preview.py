import threading
import time
from dataclasses import dataclass

from infra.fake_mineos import Person, build_call
from mineos_integration.contract import Action, Identity, parse_request
from mineos_integration.preview import build_preview
from mineos_integration.sources.base import PreviewProperty, SourceConfig


@dataclass
class PreviewOnlySource:
    """Answers previews after `delay_seconds`, or fails; records nothing else."""

    config: SourceConfig
    properties: list[PreviewProperty]
    delay_seconds: float = 0.0
    error: Exception | None = None

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        time.sleep(self.delay_seconds)
        if self.error:
            raise self.error
        return self.properties


def preview_source(name, identity=Identity.EMAIL, properties=None, **options):
    default = [PreviewProperty("Records", "2")]
    chosen = default if properties is None else properties
    return PreviewOnlySource(SourceConfig(name=name, identity=identity), chosen, **options)


PERSON = Person(name="Ada", email="ada@example.com")


def request(is_test=False):
    return parse_request(
        Action.PREVIEW, build_call(Action.PREVIEW, PERSON, integration_id="i", is_test=is_test).body
    )


def test_preview_lists_sources_that_found_the_person_with_string_properties():
    sources = [
        preview_source(
            "accounts", properties=[PreviewProperty("Records", "2"), PreviewProperty("Plan", "pro")]
        ),
        preview_source("empty", properties=[]),
    ]
    answer = build_preview(sources, request(), deadline_seconds=2)
    assert answer == {
        "records": [
            {
                "name": "accounts",
                "properties": [{"name": "Records", "value": "2"}, {"name": "Plan", "value": "pro"}],
            }
        ]
    }


def test_preview_keeps_at_most_three_properties():
    many = [PreviewProperty(f"p{n}", str(n)) for n in range(5)]
    (record,) = build_preview([preview_source("a", properties=many)], request(), 2)["records"]
    assert len(record["properties"]) == 3
    assert all(isinstance(p["value"], str) for p in record["properties"])


def test_preview_slow_source_is_left_out_and_deadline_respected():
    sources = [preview_source("fast"), preview_source("slow", delay_seconds=3)]
    started = time.monotonic()
    answer = build_preview(sources, request(), deadline_seconds=0.5)
    elapsed = time.monotonic() - started
    assert [r["name"] for r in answer["records"]] == ["fast"]
    assert elapsed < 1.5


def test_preview_failing_source_is_left_out():
    sources = [preview_source("ok"), preview_source("broken", error=RuntimeError("connection refused"))]
    assert [r["name"] for r in build_preview(sources, request(), 2)["records"]] == ["ok"]


def test_preview_source_without_the_identity_is_not_asked():
    asked = threading.Event()

    class Recording(PreviewOnlySource):
        def preview(self, identity_value):
            asked.set()
            return super().preview(identity_value)

    source = Recording(
        SourceConfig(name="phones", identity=Identity.PHONE_NUMBER), [PreviewProperty("a", "b")]
    )
    assert build_preview([source], request(), 1) == {"records": []}
    assert not asked.is_set()


def test_preview_test_call_touches_no_source():
    source = preview_source("accounts", error=AssertionError("must not be called"))
    assert build_preview([source], request(is_test=True), 1) == {"records": []}
