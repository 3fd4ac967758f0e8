"""The two architectures testos is built for: x86_64 and its 32-bit twin, i686.

The twin runs on the same x86_64 host (an i386 Debian root, programs built with
``gcc -m32`` and packed with ``rpmbuild --target i686``) and is kept lean: it
builds only the packages its own crashes need.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """How one architecture of testos is built and how its crashes identify it."""

    # What `uname -m` says on the user's machine: ABRT's `architecture` file, and the
    # RPM arch the packages are built for.
    machine: str
    # The arch in the release id; ABRT normalises i686 and i586 to i386.
    release_arch: str
    # Extra mmdebstrap, compiler and rpmbuild arguments (none for the host's own arch).
    mmdebstrap_options: tuple[str, ...] = ()
    compiler_options: tuple[str, ...] = ()
    rpmbuild_options: tuple[str, ...] = ()
    # Where libraries go; the programs carry it as their rpath.
    libdir: str = "/usr/lib64"
    # The application packages and crashes built for it; None means all of them.
    app_names: tuple[str, ...] | None = None
    # Part of the cache layer names, so the two releases' layers are told apart.
    layer_tag: str = ""

    @property
    def release_id(self) -> str:
        return f"testos-1-{self.release_arch}"

    def builds(self, name: str) -> bool:
        """Whether the package (or crash program) ``name`` is built for this target."""
        return self.app_names is None or name in self.app_names

    def layer(self, kind: str, key: str) -> str:
        """The cache layer name, e.g. ``rootfs-<key>`` or ``rootfs-i686-<key>``."""
        return f"{kind}-{self.layer_tag}-{key}" if self.layer_tag else f"{kind}-{key}"


X86_64 = Target(machine="x86_64", release_arch="x86_64")
# One library in two versions and the program crashing in the older one: enough to
# show old-version frames, and about two minutes to build cold.
I686 = Target(
    machine="i686",
    release_arch="i386",
    mmdebstrap_options=("--architectures=i386",),
    compiler_options=("-m32",),
    rpmbuild_options=("--target", "i686"),
    libdir="/usr/lib",
    app_names=("libcrash", "crasher"),
    layer_tag="i686",
)
TARGETS = (X86_64, I686)
