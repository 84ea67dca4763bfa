# syntax=docker/dockerfile:1
# opskit service image: `docker build -t opskit-demo .` then `docker run --read-only --tmpfs /tmp -p 8000:8000 opskit-demo`.
# The build stage installs opskit (the distribution opskit-asgi, with FastAPI for the demo) as a wheel into /opt/venv;
# it compiles the native OTLP encoders (OPSKIT_BUILD_NATIVE=1: the build fails rather than leave it out).
# The final stage has no compilers, runs as UID 10001 and writes only under /tmp (metrics directory, gunicorn
# heartbeat files).

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPSKIT_BUILD_NATIVE=1
# The compiler stays in this stage; Debian's security updates move its exact versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY opskit ./opskit
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir "$(echo /wheels/opskit_asgi-*.whl)[fastapi]" \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.12.8-slim-bookworm
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    PROMETHEUS_MULTIPROC_DIR=/tmp/opskit-metrics \
    HOST=0.0.0.0 \
    PORT=8000
RUN groupadd --system --gid 10001 opskit \
    && useradd --system --uid 10001 --gid opskit --home-dir /tmp --no-create-home --shell /usr/sbin/nologin opskit
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY examples ./examples
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
# No ENTRYPOINT: `docker run IMAGE opskit-asgi config` and a compose `command:` replace the whole line.
CMD ["opskit-asgi", "serve", "examples.demo:app"]
