"""prometheus_client's parsers, typed for the tests."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families


def parse_openmetrics(text: str) -> list[Metric]:
    """Families of an OpenMetrics exposition (fails without ``# EOF`` or on a bad exemplar)."""
    return list(openmetrics_parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def parse_text(text: str) -> list[Metric]:
    """Families of a classic text exposition."""
    return list(text_string_to_metric_families(text))
