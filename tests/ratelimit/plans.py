"""An app limited per user and plan: rates from the plan, costs per request, tokens charged afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI, Header, Request
from fastapi.responses import StreamingResponse

import opskit
from opskit.ratelimit import Rate, RateLimit, charge

PLANS = {"free": "2/minute", "pro": "5/minute"}
#: How often each user's plan was looked up (the rate function ran).
LOOKUPS: Counter[str] = Counter()


@dataclass(frozen=True)
class User:
    id: str
    plan: str

    def __str__(self) -> str:
        return self.id


USERS = {"key-alice": User("alice", "free"), "key-bob": User("bob", "pro"), "key-carol": User("carol", "pro")}


async def current_user(x_api_key: Annotated[str | None, Header()] = None) -> User | None:
    """The app's auth dependency: who holds the API key (None: anonymous, not limited here)."""
    return USERS.get(x_api_key or "")


async def plan_rate(user: User) -> str:
    """The user's plan decides the rate (async, as a database lookup would be)."""
    LOOKUPS[user.id] += 1
    return PLANS[user.plan]


def burst_rate(request: Request) -> tuple[Rate, ...]:
    """A sync rate function of the request returning parsed rates: 3 at once for everybody here."""
    return (Rate(amount=1, period=60.0, burst=3),)


async def pages(request: Request) -> int:
    """The cost of an export: its page count."""
    return int(request.query_params.get("pages", "1"))


tokens = RateLimit("100/minute", name="tokens", key=Depends(current_user), chargeable=True)


def create(**settings: object) -> FastAPI:
    app = FastAPI()

    @app.get("/plan", dependencies=[Depends(RateLimit(plan_rate, key=Depends(current_user)))])
    async def plan(user: Annotated[User | None, Depends(current_user)]) -> dict[str, str]:
        return {"user": str(user)}

    @app.get("/burst", dependencies=[Depends(RateLimit(burst_rate, key="header:X-Api-Key"))])
    async def burst() -> dict[str, str]:
        return {"burst": "ok"}

    @app.get("/export", dependencies=[Depends(RateLimit("10/minute", cost=pages))])
    async def export() -> dict[str, str]:
        return {"export": "ok"}

    @app.post("/complete", dependencies=[Depends(tokens)])
    async def complete(used: int, background: BackgroundTasks) -> dict[str, int]:
        background.add_task(charge, used)  # runs after the response is sent
        return {"tokens": used}

    @app.post("/stream", dependencies=[Depends(tokens)])
    async def stream(used: int) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial "
            await charge(used, name="tokens")  # counted once the work is done
            yield b"done"

        return StreamingResponse(body())

    @app.get("/uncharged")
    async def uncharged() -> dict[str, str]:
        try:
            await charge(5)
        except LookupError as exc:
            return {"error": str(exc)}
        return {"error": ""}

    opskit.instrument(app, **settings)
    return app


def served() -> FastAPI:
    """The app a real server runs (``uvicorn --factory``), configured from the environment."""
    return create()
