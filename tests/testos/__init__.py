"""The synthetic release "testos 1" (x86_64) with real crashes, built by test code and cached.

``build_testos()`` returns a :class:`Testos`: an RPM repository in Fedora's layout
(a Debian root file system packed as ``testos-base``, application packages in two
versions each with ``-debuginfo``, except ``libquiet-debuginfo``) and, for four
programs, the core and ABRT problem directory of a crash on a machine that runs
the OLD versions. ``python -m tests.testos`` builds it and prints the paths.
"""

from tests.testos.build import build_testos
from tests.testos.model import Crash, Testos

__all__ = ["Crash", "Testos", "build_testos"]
