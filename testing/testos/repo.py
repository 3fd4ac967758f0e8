"""Lay the RPMs out like a Fedora repository and index it with createrepo_c."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from testing.testos.steps import run, step


def withheld(rpm: Path, withheld_debuginfo: Iterable[str]) -> bool:
    """Whether ``rpm`` is one of the debug packages (-debuginfo, -debugsource) held back."""
    return any(
        rpm.name.startswith((f"{name}-debuginfo-", f"{name}-debugsource-"))
        for name in withheld_debuginfo
    )


def make_repository(repo: Path, rpms: Iterable[Path], withheld_debuginfo: Iterable[str]) -> None:
    """Fill ``repo/Packages/<first letter>/`` and write ``repo/repodata/``."""
    withheld_debuginfo = tuple(withheld_debuginfo)
    with step("createrepo_c the testos repository"):
        for rpm in rpms:
            if withheld(rpm, withheld_debuginfo):
                continue
            target = repo / "Packages" / rpm.name[0].lower() / rpm.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(rpm, target)  # same file system as the cached layers; no copy
        # gzip metadata: every dnf and libsolv reads it.
        run(["createrepo_c", "--quiet", "--general-compress-type=gz", repo])
