"""Where the builder keeps its state under retracer's data folder.

Only the builder writes there; the server names the data folder and, for its
package and debuginfod views, reads the build-id indexes through
:func:`repository_index_dir`. The rest of the folder's layout is the builder's own.
"""

from __future__ import annotations

from pathlib import Path


def builder_dir(data_dir: Path) -> Path:
    """The builder's folder under the data folder."""
    return data_dir / "builder"


def repository_index_dir(data_dir: Path) -> Path:
    """The folder of the build-id indexes (see retracer.sync.index)."""
    return builder_dir(data_dir) / "index"
