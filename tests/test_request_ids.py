from __future__ import annotations

import os
import threading
import uuid

from opskit.request_ids import uuid4_hex, uuid7_hex


class TestUuid4Hex:
    def test_ids_are_rfc_4122_version_4(self) -> None:
        """Every ID from several pool refills is a valid version-4, RFC 4122 variant UUID."""
        for rid in (uuid4_hex() for _ in range(1000)):
            parsed = uuid.UUID(rid)
            assert parsed.version == 4
            assert parsed.variant == uuid.RFC_4122
            assert rid == parsed.hex

    def test_ids_are_unique_across_threads(self) -> None:
        """Threads drawing from the shared pool at once never get the same ID."""
        seen: list[list[str]] = [[] for _ in range(4)]

        def draw(out: list[str]) -> None:
            out.extend(uuid4_hex() for _ in range(5000))

        threads = [threading.Thread(target=draw, args=(out,)) for out in seen]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [rid for out in seen for rid in out]
        assert len(set(every)) == len(every) == 20000

    def test_forked_child_does_not_reuse_the_parents_pool(self) -> None:
        """After fork (gunicorn's workers) the child draws fresh IDs, not the parent's next ones."""
        uuid4_hex()  # the pool now holds unused IDs the child would inherit
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            os.close(read_end)
            os.write(write_end, "".join(uuid4_hex() for _ in range(10)).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            child = pipe.read().decode()
        os.waitpid(pid, 0)
        parent = "".join(uuid4_hex() for _ in range(10))
        child_ids = {child[i : i + 32] for i in range(0, len(child), 32)}
        assert len(child_ids) == 10
        assert child_ids.isdisjoint(parent[i : i + 32] for i in range(0, len(parent), 32))


class TestUuid7Hex:
    def test_ids_are_version_7_and_sortable_by_time(self) -> None:
        """UUIDv7s carry the version bits and sort in creation order across milliseconds."""
        first = uuid7_hex()
        parsed = uuid.UUID(first)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        later = first
        while later[:12] == first[:12]:
            later = uuid7_hex()
        assert later > first
