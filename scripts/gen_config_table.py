"""Generate README's configuration table from the settings object (``make docs``).

With ``--write`` the table between the markers in README.md is replaced; without, it is printed.
tests/test_readme.py fails when README and the settings disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import AliasChoices

from opskit.settings import Settings, env_name

BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def _default(field: str) -> str:
    info = Settings.model_fields[field]
    value = info.get_default(call_default_factory=True)
    if value is None or value == "" or value == ():
        return "—"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        return "`" + ",".join(str(v) for v in value) + "`"
    return f"`{value}`"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        names = [env_name(field, info)]
        if isinstance(alias, AliasChoices):
            names += [str(c) for c in alias.choices[1:] if str(c) != field]
        name = " / ".join(f"`{n}`" for n in names)
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| {name} | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def main() -> int:
    text = table()
    if "--write" not in sys.argv:
        print(text)
        return 0
    readme = README.read_text()
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
