"""A lean recording span for the server side of a request.

The SDK's span validates every attribute through locks and bounded mappings on each call; most of
the cost of the official instrumentation is there. A request span holds a handful of attributes
whose types opskit controls, so :class:`ServerSpan` keeps them in a plain dict. It is its own
:class:`ReadableSpan` too (as the SDK's span is), so when it ends it goes to the batch processor and
exporter as it is, with no copy. User code still sees a normal :class:`opentelemetry.trace.Span`
(``trace.get_current_span().set_attribute(...)`` works); once ended, it no longer changes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.util import types

__all__ = ["ServerSpan"]


MAX_ATTRIBUTES = 128
MAX_EVENTS = 128
_PRIMITIVES = (str, bool, int, float)
_UNSET = Status(StatusCode.UNSET)


def _clean(value: object) -> types.AttributeValue | None:
    """The value if OTLP can carry it (a primitive or a homogeneous sequence of them), else None."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items = tuple(value)
        if not items:
            return items
        kind = type(items[0])
        if kind in _PRIMITIVES and all(type(item) is kind for item in items):
            return items
    return None


class ServerSpan(trace.Span, ReadableSpan):
    """A recording SERVER span, handed to ``processor`` (as the :class:`ReadableSpan` it also is) when it ends."""

    # What every request span shares, read by ReadableSpan's properties.
    _kind = SpanKind.SERVER
    _links: Sequence[Any] = ()
    _instrumentation_info = None
    # Narrower than ReadableSpan's: a request span always has them, its attributes in a plain dict.
    _context: SpanContext
    _start_time: int
    _attributes: dict[str, types.AttributeValue]

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, types.AttributeValue],
        start_time: int,
        processor: SpanProcessor,
        resource: Resource,
        scope: InstrumentationScope,
    ) -> None:
        self._name = name
        self.initial_name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._start_time = start_time
        self._end_time: int | None = None
        self._events: list[Event] = []
        self._status = _UNSET
        self._processor = processor
        self._resource = resource
        self._instrumentation_scope = scope

    @property
    def start_time(self) -> int:
        """Nanoseconds since the epoch when the request started."""
        return self._start_time

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._end_time is not None or not isinstance(key, str) or not key:
            return
        cleaned = _clean(value)
        if cleaned is not None and (key in self._attributes or len(self._attributes) < MAX_ATTRIBUTES):
            self._attributes[key] = cleaned

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        if self._end_time is not None or len(self._events) >= MAX_EVENTS:
            return
        cleaned: dict[str, types.AttributeValue] = {}
        for key, value in (attributes or {}).items():
            item = _clean(value)
            if item is not None:
                cleaned[key] = item
        self._events.append(Event(name, cleaned, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        # Links must be known when a span starts for samplers to see them; a server span has none.
        return

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return  # OK is final (specification)
        if isinstance(status, Status):
            self._status = status
        else:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, Any] = {
            "exception.type": qualname if module in (None, "builtins") else f"{module}.{qualname}",
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        self._processor.on_end(self)

    def __repr__(self) -> str:
        return f"ServerSpan(name={self._name!r}, trace_id={self._context.trace_id:032x})"
