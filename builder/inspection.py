"""List the modules mapped into a crashed process, reading the core in the sandbox.

``eu-unstrip -n --core`` runs in a container of the release's base image; its output
comes from an untrusted file, so every line is checked before it is believed.
"""

from __future__ import annotations

import re
from pathlib import Path

from retracer.builder.errors import CoreRejected
from retracer.builder.model import Module
from retracer.builder.sandbox import BindMount, RunSpec, Sandbox

CORE_IN_SANDBOX = "/retrace/core"
_MAX_MODULES = 4096
# START+SIZE BUILDID[@ADDR] FILE DEBUGFILE MODULENAME
_LINE = re.compile(
    r"^0x(?P<start>[0-9a-f]{1,16})\+0x(?P<size>[0-9a-f]{1,16})"
    r" (?P<build_id>[0-9a-f]{2,128}|-)(?:@0x[0-9a-f]{1,16})?"
    r" (?P<file>\S+) \S+ (?P<name>\S.{0,1023})$"
)
_SAFE_PATH = re.compile(r"^/[\w.+@%=,:~/-]{1,1023}$")


def inspect_core(
    sandbox: Sandbox, base_image: str, core: Path, executable: str, timeout: float
) -> tuple[Module, ...]:
    """The modules of the crashed process that carry a build-id, the executable first.

    Raises:
        CoreRejected: the core lists no usable module, or eu-unstrip cannot read it.
        StepTimeout, SandboxFailed, SandboxUnavailable: from the sandbox.
    """
    output = sandbox.run(
        RunSpec(
            image=base_image,
            command=["eu-unstrip", "-n", f"--core={CORE_IN_SANDBOX}"],
            step="core inspection",
            timeout=timeout,
            mounts=[BindMount(core, CORE_IN_SANDBOX)],
        )
    )
    if output.exit_code != 0 and not output.stdout.strip():
        why = _last_line(output.stderr) or f"eu-unstrip exited with {output.exit_code}"
        raise CoreRejected(f"its modules cannot be read ({why})")
    modules = parse_modules(output.stdout, executable)
    if not modules:
        raise CoreRejected("it lists no mapped module with a build-id")
    return modules


def parse_modules(text: str, executable: str) -> tuple[Module, ...]:
    """Parse and validate eu-unstrip's lines; anything malformed is dropped."""
    modules: dict[str, Module] = {}
    for line in text.splitlines()[: _MAX_MODULES * 2]:
        found = _LINE.match(line.strip())
        if found is None or found["build_id"] == "-":
            continue
        name = found["name"]
        # Libraries are named by soname; their file (found in the sandbox) has the path.
        path = executable if name == "[exe]" else name
        if not path.startswith("/") and found["file"].startswith("/"):
            path = found["file"]
        if name.startswith("[vdso") or not _SAFE_PATH.match(path) or "/../" in path:
            continue
        module = Module(
            path=path,
            build_id=found["build_id"],
            start=int(found["start"], 16),
            size=int(found["size"], 16),
        )
        modules.setdefault(path, module)
        if len(modules) >= _MAX_MODULES:
            break
    ordered = sorted(modules.values(), key=lambda m: (m.path != executable, m.start))
    return tuple(ordered)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200].rstrip(".") if lines else ""
