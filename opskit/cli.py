"""The ``opskit`` command: ``opskit serve MODULE:APP`` and ``opskit config``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .runtime import Runtime, build_runtime
from .settings import ConfigError, Settings
from .version import DISTRIBUTION, VERSION

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opskit-asgi", description="Serve and inspect opskit-instrumented ASGI apps.")
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--host", help="address to listen on (overrides HOST)")
    overrides.add_argument("--port", type=int, help="port to listen on (overrides PORT)")
    overrides.add_argument(
        "--workers", type=int, dest="web_concurrency", help="worker count (overrides WEB_CONCURRENCY)"
    )

    serve = commands.add_parser(
        "serve",
        parents=[overrides],
        help="run the app: gunicorn with uvicorn workers, or one reloading uvicorn with --dev",
    )
    serve.add_argument("app", metavar="MODULE:APP", help="the ASGI application, e.g. myservice.main:app")
    serve.add_argument("--dev", action="store_true", help="one uvicorn process that reloads on code changes")

    commands.add_parser(
        "config", parents=[overrides], help="print the effective configuration and where each value came from"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        name: getattr(args, name) for name in ("host", "port", "web_concurrency") if getattr(args, name) is not None
    }


def _fail(message: str, *, as_json: bool) -> int:
    if as_json:
        from .serving.logs import fatal_line

        print(fatal_line(message, "opskit.cli"), file=sys.stderr)
    else:
        print(f"opskit: {message}", file=sys.stderr)
    return 2


def _config(settings: Settings, overrides: dict[str, Any]) -> int:
    from .serving.options import bind_addresses
    from .serving.report import render
    from .serving.sizing import worker_count

    sizing = worker_count(settings)
    derived = {"workers": f"{sizing.workers} ({sizing.reason})", "bind": ",".join(bind_addresses(settings))}
    print(render(settings, overrides, derived))
    return 0


def _serve_dev(app: str, settings: Settings) -> int:
    import uvicorn

    from .serving.logs import configure_process_logging

    configure_process_logging(settings)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one line per file event otherwise
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        reload=True,
        reload_dirs=[os.getcwd()],
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # opskit's middleware applies them, from trusted peers only
        timeout_keep_alive=settings.keep_alive,
    )
    return 0


def _serve(app: str, runtime: Runtime) -> int:
    from .serving.application import GunicornApplication
    from .serving.options import gunicorn_options

    GunicornApplication(app, gunicorn_options(runtime)).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``opskit`` console script and ``python -m opskit``."""
    args = _parser().parse_args(argv)
    overrides = _overrides(args)
    serving = args.command == "serve"
    try:
        runtime = build_runtime(**overrides)
    except ConfigError as exc:
        return _fail(str(exc), as_json=serving)
    settings = runtime.settings
    if not serving:
        return _config(settings, overrides)
    # Like `python -m`, the current directory is importable: `opskit serve app:app` finds ./app.py.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.dev:
        return _serve_dev(args.app, settings)
    return _serve(args.app, runtime)
