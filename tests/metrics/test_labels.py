"""Extra labels: where each takes its value, and the cap on distinct values."""

from __future__ import annotations

from opskit.exchange import Exchange
from opskit.fields import REDACTED, FieldPolicy
from opskit.metrics.labels import MAX_LABEL_VALUE, OTHER, ExtraLabel
from opskit.metrics.registry import Registry
from opskit.runtime import Runtime
from opskit.settings import load_settings
from tests.metrics.test_engine import values


def exchange(headers: list[tuple[bytes, bytes]], **annotations: object) -> Exchange:
    ex = Exchange({"type": "http", "path": "/", "headers": headers}, Runtime(load_settings()))
    ex.annotations = dict(annotations) or None
    return ex


class TestExtraLabel:
    def setup_method(self) -> None:
        self.registry = Registry()
        self.overflow = self.registry.counter("overflow_total", "Overflow.", ("label",))
        self.policy = FieldPolicy(["authorization"])

    def test_values_come_from_annotations_or_headers(self) -> None:
        """An annotated field by its name; a header by ``header:Name`` (label in snake case); missing is empty."""
        tenant = ExtraLabel("tenant", 10, self.overflow, self.policy)
        version = ExtraLabel("header:X-Client-Version", 10, self.overflow, self.policy)
        assert (tenant.name, version.name) == ("tenant", "x_client_version")
        ex = exchange([(b"x-client-version", b"2.1")], tenant="acme")
        assert (tenant.value(ex), version.value(ex)) == ("acme", "2.1")
        assert (tenant.value(exchange([])), version.value(exchange([]))) == ("", "")

    def test_a_sensitive_header_is_redacted_and_long_values_cut(self) -> None:
        """header:Authorization never shows its value; a long header is cut to 128 characters."""
        auth = ExtraLabel("header:Authorization", 10, self.overflow, self.policy)
        assert auth.value(exchange([(b"authorization", b"Bearer secret")])) == REDACTED
        long = ExtraLabel("header:X-Long", 10, self.overflow, self.policy)
        assert long.value(exchange([(b"x-long", b"v" * 1000)])) == "v" * MAX_LABEL_VALUE

    def test_values_past_the_cap_are_other_and_counted(self) -> None:
        """With a cap of 3, the fourth distinct value is __other__; values seen before keep their own."""
        tenant = ExtraLabel("tenant", 3, self.overflow, self.policy)
        seen = [tenant.value(exchange([], tenant=f"t{n % 5}")) for n in range(10)]
        assert seen == ["t0", "t1", "t2", OTHER, OTHER, "t0", "t1", "t2", OTHER, OTHER]
        assert values(self.registry, "overflow_total") == {("tenant",): [4.0]}
