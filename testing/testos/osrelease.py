"""How testos 1 identifies itself, in the files ABRT reads on the user's machine."""

from __future__ import annotations

# The release id and the `architecture` file depend on the build target (see target.py).
# The first line of /etc/system-release, which ABRT uploads as `os_release`.
SYSTEM_RELEASE = "TestOS release 1 (Demo)"
OS_ID = "testos"
VERSION_ID = "1"
# /etc/os-release; ABRT derives the release id from the REDHAT_BUGZILLA_* keys.
OS_RELEASE_FILE = """\
NAME="TestOS"
VERSION="1 (Demo)"
ID=testos
VERSION_ID=1
PRETTY_NAME="TestOS 1 (Demo)"
REDHAT_BUGZILLA_PRODUCT="testos"
REDHAT_BUGZILLA_PRODUCT_VERSION=1
"""
