"""Compiles opskit's optional native module, its OTLP encoders of log records and spans, into the wheel.

``OPSKIT_BUILD_NATIVE`` decides: ``auto`` (the default) compiles it when a C compiler works and
builds a pure-Python wheel with a warning when none does; ``1`` fails the build without one;
``0`` never compiles (a ``py3-none-any`` wheel). opskit runs the same without the module, with
the Python encoders doing their work at a higher cost per log record and span.

An editable install compiles the module next to its source, where the source tree is imported from.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

VARIABLE = "OPSKIT_BUILD_NATIVE"
SOURCE = "opskit/otlp/_native.c"
MODULE = "opskit/otlp/_native"


def _choice() -> str:
    value = os.environ.get(VARIABLE, "auto").strip().lower() or "auto"
    if value not in ("auto", "0", "1"):
        raise ValueError(f"{VARIABLE}={value!r}: expected auto, 0 or 1")
    return value


def _compile(source: Path, target: Path) -> None:
    """One compiler call, with the flags and link command of the interpreter being built for."""
    link = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED") or "cc -shared"
    flags = os.environ.get("CFLAGS", "")
    command = [
        *shlex.split(link),
        *shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC"),
        "-O2",
        "-Wall",
        *shlex.split(flags),
        "-I",
        sysconfig.get_paths()["include"],
        str(source),
        "-o",
        str(target),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)}\n{result.stdout}{result.stderr}")


class NativeBuildHook(BuildHookInterface):
    """Adds the compiled module to the wheel (or, for an editable install, to the source tree)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        choice = _choice()
        if choice == "0":
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        source = Path(self.root) / SOURCE
        if version == "editable":
            target = Path(self.root) / (MODULE + suffix)
        else:
            self._work = tempfile.mkdtemp(prefix="opskit-native-")
            target = Path(self._work) / Path(MODULE + suffix).name
        try:
            _compile(source, target)
        except (OSError, RuntimeError) as exc:
            if choice == "1":
                raise RuntimeError(f"{VARIABLE}=1 and the native module does not compile: {exc}") from exc
            self.app.display_warning(
                f"opskit: the native OTLP encoders were not compiled ({exc}); "
                f"building without it (set {VARIABLE}=0 to skip the attempt)"
            )
            return
        if version != "editable":
            build_data["force_include"][str(target)] = MODULE + suffix
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
