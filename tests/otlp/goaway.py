"""Run as a process: one OTLP/gRPC export to a collector that refuses with a GOAWAY, stderr left to grpc.

``python -m tests.otlp.goaway [--grpc-first]`` starts a listener that answers every HTTP/2
connection with its settings and a GOAWAY (``ENHANCE_YOUR_CALM``, ``too_many_pings``: what a
collector sends a client that pings too often), exports once through opskit's gRPC client, and
prints the ``GRPC_VERBOSITY`` the process ended with. grpcio's C core reports such a GOAWAY with
an INFO line on stderr. ``--grpc-first`` imports grpc before opskit's client, as an app that uses
grpc itself would.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame: the server's preface
_CALM = 0xB


def _goaway(debug: bytes) -> bytes:
    payload = struct.pack(">II", 0, _CALM) + debug  # last stream id 0: nothing was processed
    return struct.pack(">I", len(payload))[1:] + b"\x07\x00\x00\x00\x00\x00" + payload


def _refuse(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        conn.recv(65536)  # the client's preface and settings
        conn.sendall(_SETTINGS + _goaway(b"too_many_pings"))


def main() -> None:
    if "--grpc-first" in sys.argv:
        import grpc  # noqa: F401

    from opskit.otlp.grpc_client import OtlpGrpcClient

    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_refuse, args=(listener,), daemon=True).start()
    client = OtlpGrpcClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "metrics", timeout=0.5)
    result = client.export(b"")
    client.close()
    print(f"ok={result.ok} GRPC_VERBOSITY={os.environ.get('GRPC_VERBOSITY')}", flush=True)


if __name__ == "__main__":
    main()
