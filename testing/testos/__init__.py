"""The synthetic release "testos 1" (x86_64) with real crashes, built by test code and cached.

``build_testos()`` returns a :class:`Testos`: an RPM repository in Fedora's layout
(a Debian root file system packed as ``testos-base``, application packages in two
versions each with ``-debuginfo`` and ``-debugsource``, except libquiet's, their
debuginfo shaped like Fedora's: dwz, MiniDebugInfo, and for ``shapes`` per-subpackage
``-debuginfo`` and a ``.dwz`` multifile; see :mod:`testing.testos.rpms`) and, for
each crash program, the core and ABRT problem directory of a crash on a machine that
runs the OLD versions. ``python -m testing.testos`` builds it and prints the paths.

``build_testos(target=I686)`` builds its 32-bit twin, ``testos-1-i386`` (see
:mod:`testing.testos.target`): i686 packages of libcrash and crasher and one crash;
``python -m testing.testos i686`` prints where it is.
"""

from testing.testos.build import build_testos
from testing.testos.model import Crash, Testos

__all__ = ["Crash", "Testos", "build_testos"]
