"""Making a write survive a crash: fsync a file or a directory by path.

Every atomic replace in Lethe (compaction's swap, the audit mirror, the analyst
database) writes a new file, fsyncs it, renames it over the old one and fsyncs the
directory — without the last step the rename itself may be lost on power failure.
"""

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a regular file or a directory (a directory makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
