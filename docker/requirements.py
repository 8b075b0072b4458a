"""Print the requirements of ebook2audio_dask and the given extras, one a line.

Used by the Containerfile (the dependency layer is installed from this list before the
source is copied, so editing the code does not reinstall the dependencies) and by
docker/wheelhouse.sh (the wheelhouse for offline builds is made from the same list).

    python3 docker/requirements.py pyproject.toml piper,espeak,serve

Extras that name the project itself (demo = ebook2audio_dask[piper,espeak]) are expanded.
Only the standard library is used (tomllib, Python 3.11+; tomli on 3.10).
"""

from __future__ import annotations

import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

SELF = re.compile(r"^\s*ebook2audio[-_]dask\s*\[([^\]]*)\]\s*$", re.IGNORECASE)


def requirements(pyproject: str, extras: str) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    found: list[str] = list(project.get("dependencies", []))
    todo = [e.strip() for e in extras.replace(" ", ",").split(",") if e.strip()]
    seen: set[str] = set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            sys.exit(f"requirements.py: no extra {extra!r} in {pyproject} "
                     f"(known: {', '.join(sorted(optional))})")  # fmt: skip
        for req in optional[extra]:
            inner = SELF.match(req)
            if inner:
                todo.extend(e.strip() for e in inner.group(1).split(",") if e.strip())
            elif req not in found:
                found.append(req)
    return found


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: requirements.py PYPROJECT EXTRAS (comma-separated, may be empty)")
    print("\n".join(requirements(sys.argv[1], sys.argv[2])))
