"""The few facts read from the ELF files of the repository's packages (pyelftools).

Only files from the all-versions repository come here, never a core: cores are
untrusted and read in the sandbox (see ``builder/inspection.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

log = logging.getLogger(__name__)


def section_data(path: Path, name: str) -> bytes | None:
    """The bytes of section ``name``; None when the file has no such section with
    contents, or cannot be read as ELF (logged)."""
    try:
        with path.open("rb") as file:
            section = ELFFile(file).get_section_by_name(name)
            if section is None or section["sh_type"] == "SHT_NOBITS":
                return None
            data: bytes = section.data()
            return data
    except (ELFError, OSError, ValueError) as error:
        log.warning("cannot read section %s of %s: %s", name, path, error)
        return None


def build_id(path: Path) -> str | None:
    """The GNU build-id of an ELF file, in hex; None when it has none (or is no ELF)."""
    try:
        with path.open("rb") as file:
            notes = ELFFile(file).get_section_by_name(".note.gnu.build-id")
            for note in notes.iter_notes() if isinstance(notes, NoteSection) else ():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return str(note["n_desc"]).lower()
    except (ELFError, OSError, ValueError) as error:
        log.warning("cannot read the build-id of %s: %s", path, error)
    return None
