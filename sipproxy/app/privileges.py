"""What C{twistd --uid/--gid} changes for files made before it drops root.

twistd builds the service as root, binds in C{privilegedStartService},
then switches to the user of C{--uid}/C{--gid}. A file the start-up makes
as root (the SQLite store's database, made by the start-up check) would
then be root's and read-only for the user that must write it; and SQLite
in WAL mode also creates C{-wal} and C{-shm} files next to the database,
so the user needs to write to the directory too. Here: find the user
twistd will switch to, give it the files made on its behalf, and say in
one line what it still cannot write (instead of a 503 for every REGISTER
once the proxy runs).
"""
from __future__ import annotations

import os
import stat
from typing import Any, Optional

__all__ = ["target_ids", "writable_by", "prepare_sqlite"]


def target_ids(options: Any) -> tuple[Optional[int], Optional[int]]:
    """(uid, gid) twistd will switch to after binding, when it runs as root
    and was given C{--uid}/C{--gid} (twistd's own options are the parent
    of the plugin's); (None, None) otherwise."""
    parent = getattr(options, "parent", None)
    if parent is None or os.geteuid() != 0:
        return None, None
    try:
        uid, gid = parent.get("uid"), parent.get("gid")
    except AttributeError:
        return None, None
    if uid is not None and gid is None:
        import pwd

        try:  # twistd takes the user's primary group when only --uid is given
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = None
    return uid, gid


def _groups(uid: int, gid: Optional[int]) -> set[int]:
    import grp
    import pwd

    groups = {gid} if gid is not None else set()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return groups
    groups.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
    return groups


def writable_by(path: str, uid: int, gid: Optional[int], directory: bool = False) -> bool:
    """Whether the user C{uid} (group C{gid} and its supplementary groups)
    may write C{path} (and, for a directory, create files in it), by its
    permission bits; root may write anything."""
    if uid == 0:
        return True
    info = os.stat(path)
    need = stat.S_IWUSR | (stat.S_IXUSR if directory else 0)
    if info.st_uid == uid:
        return info.st_mode & need == need
    if info.st_gid in _groups(uid, gid):
        need >>= 3
        return info.st_mode & need == need
    need >>= 6
    return info.st_mode & need == need


def prepare_sqlite(path: str, uid: Optional[int], gid: Optional[int], created: bool) -> Optional[str]:
    """Hand the SQLite database at C{path} to the user twistd switches to:
    give it the database when the start-up has just C{created} it as root,
    and check that the user can write the database, the files SQLite keeps
    beside it, and their directory. The problem in one line, or None."""
    if uid is None:
        return None
    directory = os.path.dirname(os.path.abspath(path))
    companions = [path + suffix for suffix in ("-wal", "-shm", "-journal")]
    if created:
        for name in [path] + companions:
            if os.path.exists(name):
                os.chown(name, uid, -1 if gid is None else gid)
    for name in [path] + companions:
        if os.path.exists(name) and not writable_by(name, uid, gid):
            return (f"--store sqlite:{path}: {name} is not writable by uid {uid} (twistd --uid); "
                    f"chown it to that user")
    if not writable_by(directory, uid, gid, directory=True):
        return (f"--store sqlite:{path}: uid {uid} (twistd --uid) cannot create files in {directory}, which "
                f"SQLite needs for its -wal and -shm files; chown the directory to that user")
    return None
