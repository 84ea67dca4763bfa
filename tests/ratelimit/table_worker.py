"""Another process on a shared rate-limit table, for the shared-memory tests.

``python -m tests.ratelimit.table_worker decide PATH RATES COUNT KEY``: decide COUNT times, print the
admitted count. ``... loop PATH RATES KEY...``: decide on the keys in turn until killed.
``... hold PATH SET``: take set SET's lock, print ``locked``, release it when stdin closes.
"""

from __future__ import annotations

import fcntl
import os
import sys

from opskit.ratelimit import parse_rates
from opskit.ratelimit.shared_memory import WAYS, SharedMemoryBackend


def main(mode: str, path: str, *args: str) -> None:
    if mode == "hold":
        fd = os.open(path, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1 + int(args[0]))
        print("locked", flush=True)
        sys.stdin.read()
        return
    backend = SharedMemoryBackend(path, max_keys=WAYS)
    rates = parse_rates(args[0])
    if mode == "decide":
        print(sum(backend.decide(args[2], rates).allowed for _ in range(int(args[1]))), flush=True)
        return
    print("deciding", flush=True)
    while True:
        for key in args[1:]:
            backend.decide(key, rates)


if __name__ == "__main__":
    main(*sys.argv[1:])
