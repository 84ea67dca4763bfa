"""A real OTLP/gRPC receiver for the tests: grpcio's server with the collector's three Export methods.

Each call is decoded with opentelemetry-proto and kept by the same store the OTLP/HTTP receiver
uses, so a test reads spans, metrics and logs the same way whatever the protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc

from tests.tracing.receiver import OtlpReceiver

__all__ = ["OtlpGrpcReceiver", "otlp_grpc_receiver"]

# Export method -> the HTTP path whose decoder keeps it.
_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": "/v1/traces",
    "opentelemetry.proto.collector.metrics.v1.MetricsService": "/v1/metrics",
    "opentelemetry.proto.collector.logs.v1.LogsService": "/v1/logs",
}


class OtlpGrpcReceiver(OtlpReceiver):
    """Serves the collector's gRPC services on a free loopback port; ``code`` other than OK fails every call.

    ``requests`` keeps each call's metadata (lower-case keys) with ``path`` the HTTP path of its signal,
    ``compression`` the ``grpc-encoding`` the call was sent with.
    """

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.OK) -> None:
        super().__init__()
        self.server.shutdown()  # only the gRPC server listens; the store and its accessors stay
        self.server.server_close()
        self.code = code
        self.grpc_server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handlers = [
            grpc.method_handlers_generic_handler(
                service, {"Export": grpc.unary_unary_rpc_method_handler(self._handler(path))}
            )
            for service, path in _SERVICES.items()
        ]
        self.grpc_server.add_generic_rpc_handlers(handlers)
        self.port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.grpc_server.start()

    def _handler(self, path: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.attempts += 1
            if self.code is not grpc.StatusCode.OK:
                context.abort(self.code, "failing on purpose")
            metadata = {key: str(value) for key, value in context.invocation_metadata()}
            return self._receive(path, metadata, body)

        return export

    def close(self) -> None:
        self._closing.set()
        self.grpc_server.stop(grace=None)


@contextmanager
def otlp_grpc_receiver(code: grpc.StatusCode = grpc.StatusCode.OK) -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver(code)
    try:
        yield receiver
    finally:
        receiver.close()
