"""Print a pip constraints file that pins every dependency in pyproject.toml to its declared lower bound.

CI installs the package with it in a second virtual environment, so the lower bounds we declare are
the versions we test: the bounds are read here, never written twice. `--skip NAME` leaves a
dependency unpinned (torch and torchvision: their lowest builds are not served for every Python).
Usage: python .ci/lowest_constraints.py [--extra NAME ...] [--skip NAME ...] > constraints.txt
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def lowest_pins(requirements: list[str], skip: set[str]) -> list[str]:
    pins = []
    for text in requirements:
        name, _, spec, _ = REQUIREMENT.match(text).groups()
        if name.lower() in skip or name == "mateffnet":
            continue
        lower = [part[2:].strip() for part in spec.split(",") if part.strip().startswith(">=")]
        if not lower:
            sys.exit(f"pyproject.toml: {text!r} declares no lower bound (>=); every dependency needs one")
        pins.append(f"{name}=={lower[0]}")
    return pins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--skip", action="append", default=[])
    args = parser.parse_args()
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in args.extra:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(lowest_pins(requirements, {name.lower() for name in args.skip})))


if __name__ == "__main__":
    main()
