"""``python -m tests.testos``: build (or find) testos 1 and print where it is."""

from __future__ import annotations

from tests.cache import cache_root
from tests.testos import build_testos
from tests.testos.build import DEMO_LINK


def main() -> None:
    testos = build_testos()
    print(f"release      {testos.release_id} ({testos.os_release})")
    print(f"root         {testos.root}")
    print(f"repo         {testos.repo}")
    print(f"demo link    {cache_root() / DEMO_LINK} -> {testos.root}")
    for name, crash in testos.crashes.items():
        print(f"crash {name:<11} {crash.package:<18} {crash.archive}")


if __name__ == "__main__":
    main()
