"""`make audit`: Inlet's dependency floors and installed versions against known security fixes, offline.

Reads ``install_requires`` from setup.cfg and audit/advisories.toml (the lowest release of each package
with every known security fix). Fails (exit 1), naming the package and the advisories, when

- a package in install_requires has no floor (``>=``),
- a floor in setup.cfg is below the release with the fixes (a fresh install could pick a vulnerable one),
- a version installed in this environment is below it.

Run: ``python audit/check.py [--setup-cfg PATH]``. It needs no network: pip-audit's vulnerability
services cannot be reached from Inlet's build machines (see advisories.toml); where they can, run
``pip-audit`` as well.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version ('2.9.13' -> (2, 9, 13); '2024.07.04' -> (2024, 7, 4))."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def floors(setup_cfg: Path) -> dict[str, str | None]:
    """install_requires -> {canonical name: floor version or None when there is no ``>=``}."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    found: dict[str, str | None] = {}
    for line in parser.get("options", "install_requires").splitlines():
        match = _REQUIREMENT.match(line)
        if not line.strip() or not match:
            continue
        name, spec = canonical(match.group(1)), match.group(2)
        floor = re.search(r">=\s*([0-9][^,;\s]*)", spec)
        found[name] = floor.group(1) if floor else None
    return found


def problems(setup_cfg: Path, advisories: dict, installed=metadata.version) -> list[str]:
    out = []
    required = floors(setup_cfg)
    for name, floor in sorted(required.items()):
        if floor is None:
            out.append(f"{name}: no floor in setup.cfg: give it '>=' a release without known security flaws")
    for package, entry in sorted(advisories.items()):
        name, fixed = canonical(package), entry["fixed_in"]
        why = "; ".join(entry["advisories"])
        floor = required.get(name)
        if floor is None and name not in required:
            out.append(f"{name}: not in setup.cfg install_requires: add {name}>={fixed} ({why})")
        elif floor is not None and release(floor) < release(fixed):
            out.append(f"{name}: setup.cfg allows {floor}, below {fixed} which fixes: {why}")
        try:
            version = installed(package)
        except metadata.PackageNotFoundError:
            continue  # not installed here: the floor above is what protects a fresh install
        if release(version) < release(fixed):
            out.append(f"{name}: {version} is installed here, below {fixed} which fixes: {why}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup-cfg", type=Path, default=HERE.parent / "setup.cfg")
    parser.add_argument("--advisories", type=Path, default=HERE / "advisories.toml")
    args = parser.parse_args(argv)
    advisories = tomllib.loads(args.advisories.read_text())
    found = problems(args.setup_cfg, advisories)
    for line in found:
        print(f"audit: {line}", file=sys.stderr)
    if found:
        print(f"audit: {len(found)} problem(s)", file=sys.stderr)
        return 1
    count = sum(len(e["advisories"]) for e in advisories.values())
    print(f"audit: OK ({len(floors(args.setup_cfg))} dependencies with floors; {count} known advisories "
          f"in {len(advisories)} packages are excluded by the floors and by what is installed)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
