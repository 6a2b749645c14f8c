"""Check that every declared floor (`pkg>=X`) can be installed beside the pinned core.

For each requirement with a floor X, find the lowest release >= X on the index and ask pip
(``--dry-run``, metadata only, nothing installed) whether it resolves together with
``torch==2.13.0`` and ``transformers>=5,<6``. A floor
that cannot resolve is a floor nobody can have: the APIs of the version pip really installs
decide, so the floor must be raised to the first release that resolves. Exits 1 naming them.
If the package index cannot be reached at all, it says so and exits 0: that is not a floor bug.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
CORE = ["torch==2.13.0", "transformers>=5.0,<6"]
SKIP = {"torch", "transformers", "medchat"}  # the core itself; the package's own extras


def floors(pyproject: Path) -> list[tuple[str, str]]:
    meta = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for req in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", req)
        if m and m.group(1).lower() not in SKIP:
            out[m.group(1).lower()] = m.group(2)
    return sorted(out.items())


def lowest(name: str, floor: str) -> str | None:
    """The lowest release on the index that satisfies `>= floor` (what the floor promises)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    m = re.search(r"Available versions: (.*)", proc.stdout)
    if not m:
        return None
    found = []
    for v in m.group(1).split(","):
        try:
            found.append(Version(v.strip()))
        except InvalidVersion:  # old releases with non-PEP 440 names ("2.0.1rc2-git")
            continue
    ok = [v for v in found if v >= Version(floor) and not v.is_prerelease]
    return str(min(ok)) if ok else None


def check(name: str, floor: str) -> tuple[str, str, bool, str]:
    version = lowest(name, floor)
    if version is None:
        return name, floor, False, "unreachable"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
    proc = subprocess.run(
        [*cmd, *CORE, f"{name}=={version}"], capture_output=True, text=True, timeout=300
    )
    return name, version, proc.returncode == 0, proc.stderr


def main() -> int:
    bad = []
    with ThreadPoolExecutor(4) as pool:  # pip is network-bound: four at a time
        results = list(pool.map(lambda nf: check(*nf), floors(ROOT / "pyproject.toml")))
    for name, version, ok, err in results:
        if not ok and "ResolutionImpossible" not in err:
            print(f"check_floors: cannot ask the package index about {name}; skipped")
            return 0
        print(f"{'ok ' if ok else 'BAD'} {name}=={version}")
        if not ok:
            bad.append(f"{name}>={version}")
    if bad:
        print(
            f"check_floors: these floors cannot be installed with {', '.join(CORE)}: "
            f"{', '.join(bad)}; raise each to the first release that resolves",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
