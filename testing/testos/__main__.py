"""``python -m testing.testos [i686]``: build (or find) testos 1 and print where it is."""

from __future__ import annotations

import sys

from testing.cache import cache_root
from testing.testos import build_testos
from testing.testos.build import DEMO_LINK
from testing.testos.target import TARGETS


def main() -> None:
    machines = {target.machine: target for target in TARGETS}
    machine = sys.argv[1] if len(sys.argv) > 1 else "x86_64"
    if machine not in machines or len(sys.argv) > 2:
        sys.exit(f"usage: python -m testing.testos [{'|'.join(machines)}]")
    testos = build_testos(target=machines[machine])
    print(f"release      {testos.release_id} ({testos.os_release})")
    print(f"root         {testos.root}")
    print(f"repo         {testos.repo}")
    if machine == "x86_64":
        print(f"demo link    {cache_root() / DEMO_LINK} -> {testos.root}")
    for name, crash in testos.crashes.items():
        print(f"crash {name:<11} {crash.package:<18} {crash.archive}")


if __name__ == "__main__":
    main()
