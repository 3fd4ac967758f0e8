"""A crash whose debuginfo is shaped like Fedora's retraces with full frames.

The ``shapes`` program (package shapes-tools) crashes in its library (shapes-libs).
Each subpackage has its own -debuginfo, and both .debug files are dwz-compressed
against one multifile, ``/usr/lib/debug/.dwz/shapes-1.0-1.x86_64``, which only the
main shapes-debuginfo ships: no module of the crash names that package, so only the
index's debug companions bring it (and shapes-debugsource) into the environment.
Without the multifile gdb drops both .debug files, and with them every name, line,
local and type below (tests/testos/test_fedora_shape.py shows the swatch type's
members are described in the multifile alone).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retracer.builder.environment import VIEW_IN_SANDBOX
from retracer.builder.model import RetraceResult
from retracer.builder.retrace import Analyzer
from retracer.sync.elf import section_data
from retracer.sync.index import build_id_link
from testing.testos import Testos
from testing.testos.rpms import SOURCES

Retraced = Callable[[str], RetraceResult]
PROGRAM = "/usr/bin/shapes"
LIBRARY = "/usr/lib64/libshapes.so.1"


def crashed_frames(result: RetraceResult) -> list[dict[str, Any]]:
    (thread,) = [t for t in result.report.to_json()["threads"] if t["crashed"]]
    frames: list[dict[str, Any]] = thread["frames"]
    return frames


def marked_line(source: Path, marker: str) -> str:
    """``file:line`` of the line holding ``marker``."""
    lines = source.read_text().splitlines()
    (number,) = [n for n, line in enumerate(lines, start=1) if marker in line]
    return f"{source.name}:{number}"


def test_frames_of_the_program_and_its_library_have_names_and_source_lines(
    retraced: Retraced, testos: Testos
) -> None:
    crash = testos.crashes["shapes"]
    frames = crashed_frames(retraced("shapes"))
    by_function = {f["function"]: f for f in frames}

    top = frames[0]
    assert top["function"] == crash.crash_function == "shapes_v10_paint_shape"
    assert top["module"] == LIBRARY
    assert f"{top['file']}:{top['line']}".endswith(crash.crash_site)
    render = by_function["shapes_v10_render"]
    assert render["module"] == LIBRARY and render["file"].endswith("libshapes.c")
    draw = by_function["shapes_v10_draw"]
    assert draw["module"] == PROGRAM
    call_site = marked_line(SOURCES / "shapes-1.0" / "shapes.c", "CALL HERE")
    assert f"{draw['file']}:{draw['line']}".endswith(call_site)
    assert by_function["main"]["module"] == PROGRAM and by_function["main"]["line"]
    assert crash.newer_function not in {f["function"] for f in frames}


def test_locals_are_printed_with_the_types_of_the_dwz_multifile(retraced: Retraced) -> None:
    frames = {f["function"]: f for f in crashed_frames(retraced("shapes"))}

    # An enum and a struct of shapes.h: both described only in the multifile.
    paint = frames["shapes_v10_paint_shape"]["locals"]
    assert paint["paint_kind"] == "SHAPES_V10_KIND_HEXAGON"
    assert paint["paint_swatch"].startswith("{swatch_hue = ")
    assert "swatch_chroma = " in paint["paint_swatch"]
    sky = frames["shapes_v10_draw"]["locals"]["sky"]
    assert sky.startswith("{swatch_hue = 210, swatch_chroma = 37 ")
    text = retraced("shapes").backtrace
    assert "sky = {swatch_hue = 210, swatch_chroma = 37 " in text


def test_the_environment_has_the_multifile_and_sources_the_modules_do_not_name(
    retraced: Retraced,
) -> None:
    result = retraced("shapes")
    report = result.report.to_json()
    modules = {m["path"]: m for m in report["modules"]}
    packages = {p.nevra for p in result.package_set.packages}

    assert modules[PROGRAM]["package"] == "shapes-tools-1.0-1.x86_64"
    assert modules[PROGRAM]["debuginfo"] == "shapes-tools-debuginfo-1.0-1.x86_64"
    assert modules[LIBRARY]["package"] == "shapes-libs-1.0-1.x86_64"
    assert modules[LIBRARY]["debuginfo"] == "shapes-libs-debuginfo-1.0-1.x86_64"
    assert {PROGRAM, LIBRARY}.isdisjoint(m["path"] for m in report["missing_debuginfo"])
    # Named by no module: the companions of the two -debuginfo packages.
    assert {"shapes-debuginfo-1.0-1.x86_64", "shapes-debugsource-1.0-1.x86_64"} <= packages
    assert not any("1.1-1" in nevra for nevra in packages if nevra.startswith("shapes"))


def test_the_view_also_gives_the_multifile_by_its_build_id(
    analyzer: Analyzer, retraced: Retraced
) -> None:
    # gdb before 13 finds a multifile only through this link (see _link_multifiles).
    result = retraced("shapes")
    debug = (
        analyzer.store.packages_dir
        / "shapes-libs-debuginfo-1.0-1.x86_64"
        / "usr/lib/debug/usr/lib64/libshapes.so.1-1.0-1.x86_64.debug"
    )
    altlink = section_data(debug, ".gnu_debugaltlink")
    assert altlink is not None
    name, _, wanted = altlink.partition(b"\0")
    view = analyzer.state_dir / "views" / result.environment
    link = Path(f"{view}{build_id_link(wanted.hex(), 'debuginfo')}")
    multifile = f"/usr/lib/debug/.dwz/{Path(name.decode()).name}"
    assert os.readlink(link) == f"{VIEW_IN_SANDBOX}{multifile}"
    assert os.path.lexists(f"{view}{multifile}")
