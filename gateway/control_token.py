"""The bearer token of the gateway's local control API, kept in a file.

The gateway creates the file at start when it is missing (random, mode 0640: the gateway's user
reads and writes it, members of the gateway's group, e.g. technicians or Prometheus, may read it,
nobody else may). ``pilectl`` and scrapers read the same file, so a technician types no secret.
"""

from __future__ import annotations

import grp
import os
import secrets
import stat
from pathlib import Path

TOKEN_FILE_MODE = 0o640
MIN_TOKEN_LENGTH = 16
_TOO_OPEN = 0o027  # group write or any access by others


class TokenFileError(Exception):
    """The token file cannot be created or read, or is unsafe; the message says which and why."""


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one is written first when the file does not exist.

    Refuses a file that others may read or the group may write, and a token that is too short.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, TOKEN_FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise TokenFileError(f"cannot create the control token file {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), TOKEN_FILE_MODE)  # exactly 0640, whatever the umask
            out.write(secrets.token_urlsafe(32) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & _TOO_OPEN:
        raise TokenFileError(
            f"control token file {path} has mode {mode:04o}; other users could read "
            f"or change it: chmod 0640 it (or 0600)"
        )
    return read_token(path)


def read_token(path: Path) -> str:
    """The token in ``path`` (its first line), with an error that tells the user what to do."""
    try:
        lines = path.read_text().splitlines()
    except PermissionError:
        raise TokenFileError(
            f"cannot read the control token file {path}: permission denied; "
            f"your user must be in the gateway's group{_group_hint(path)} "
            f"(then log in again)"
        ) from None
    except FileNotFoundError:
        raise TokenFileError(
            f"control token file {path} does not exist; the gateway creates it when "
            f"it starts (pass the gateway's config with --config, or the file with "
            f"--token-file)"
        ) from None
    except OSError as exc:
        raise TokenFileError(f"cannot read the control token file {path}: {exc.strerror}") from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenFileError(
            f"control token file {path}: the token must be at least "
            f"{MIN_TOKEN_LENGTH} characters on the first line"
        )
    return token


def _group_hint(path: Path) -> str:
    """`` 'pilegate'``: the group owning ``path``, when it can be told."""
    try:
        return f" {grp.getgrgid(path.stat().st_gid).gr_name!r}"
    except (OSError, KeyError):
        return ""
