"""Names that become file and folder names, bounded in bytes as file systems bound them: the one place.

A file or folder name holds at most NAME_MAX bytes on Linux (ext4, XFS, btrfs, tmpfs) and macOS (APFS), and
a path handed to the kernel at most PATH_MAX. Bytes, not characters: a name is stored as os.fsencode makes
it (UTF-8 on both), so 'é' takes 2 bytes and '語' 3, and a 200-character name can need 600. Past either
bound the kernel answers ENAMETOOLONG wherever the name is first used, deep inside a command; so every name
and path a user gives is measured here first (`check_name`, `check_path`: one line, before anything is
created), and a name the tool composes itself is fitted (`fit_name`: cut, with a digest to keep names apart).
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import PurePath

from blocks.atomic import TEMP_EXTRA

from .errors import UserError, clip, shown

NAME_MAX = 255  # bytes in one file or folder name (Linux's and macOS's NAME_MAX)
PATH_MAX = 4096  # bytes in a whole path (Linux's PATH_MAX; macOS's is 1,024, which ENAMETOOLONG still catches)
TEMP_ROOM = TEMP_EXTRA  # bytes blocks.atomic adds to a name for the temporary file it writes first (18)
SHOWN = 60  # characters of an over-long name quoted in a message
_UNITS = "UTF-8 takes 2 bytes for an accented letter, 3 for most CJK characters"


def size(name: str | os.PathLike) -> int:
    """Bytes `name` takes on disk: os.fsencode's (UTF-8; a PEP 383 surrogate is the one byte it stands for)."""
    try:
        return len(os.fsencode(name))
    except UnicodeEncodeError as e:  # a lone surrogate no file name can hold (from a YAML "\ud800")
        raise UserError(f"{shown(os.fspath(name), SHOWN)}: not a valid file name ({e.reason})") from None


def check_name(name: str, what: str, room: int = 0) -> str:
    """`name`, once it fits one file or folder name with `room` bytes to spare; one UserError line else."""
    n, most = size(name), NAME_MAX - room
    if n > most:
        spare = f" ({NAME_MAX} less {room} for the files named after it)" if room else ""
        raise UserError(f"{what} {shown(name, SHOWN)}: {n:,} bytes, over the {most} a file or folder name "
                        f"holds{spare}; {_UNITS}")
    return name


def check_path(path: str | os.PathLike, what: str, room: int = 0) -> str:
    """`path` as given, once each of its names fits NAME_MAX bytes (the last with `room` to spare) and the whole
    fits PATH_MAX; one UserError line naming `what` and the first name that does not, else."""
    text = os.fspath(path)
    parts = PurePath(text).parts
    for i, part in enumerate(parts):
        spare = room if i == len(parts) - 1 else 0
        if size(part) + spare > NAME_MAX:
            where = what if part == text else f"{what} {shown(text, SHOWN)}: the name"
            check_name(part, where, spare)
    if size(text) + room > PATH_MAX:
        raise UserError(f"{what} {shown(text, SHOWN)}: {size(text):,} bytes, over the {PATH_MAX:,} a path "
                        f"holds")
    return text


def fit_name(name: str, room: int = 0) -> str:
    """`name` when it fits NAME_MAX bytes with `room` to spare; else its start and a digest of the whole, to fit."""
    if size(name) + room <= NAME_MAX:
        return name
    digest = "-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:12]  # two long names that share a start stay apart
    head = name
    while size(head + digest) + room > NAME_MAX:  # cut characters, never a multi-byte character's bytes
        head = head[:-1]
    return head + digest


def too_long(e: OSError) -> str | None:
    """The one line for an ENAMETOOLONG the checks above did not see coming; None for another error."""
    if e.errno != errno.ENAMETOOLONG:
        return None
    name = clip(os.fsdecode(e.filename), SHOWN) if isinstance(e.filename, (str, bytes)) else "a path"
    return (f"{name}: a file or folder name in it is over {NAME_MAX} bytes, or the whole over {PATH_MAX:,} "
            f"({_UNITS})")
