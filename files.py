"""How the scripts here touch the disk: all-or-nothing writes, JSON and checksums read with
one-line errors, a folder's lock, and the per-user cache folder.

Every file this project writes (shards, manifests, checkpoints, tokenizers, downloads) goes
through atomic_write, so a crash or Ctrl-C never leaves a half-written file behind.
"""
import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile

from errors import UserError, one_line

_UMASK = os.umask(0o022)  # read the process umask (the only way is to set it) ...
os.umask(_UMASK)  # ... and put it back


TEMP_SUFFIX = ".tmp"  # atomic_write's temp file for NAME is ".NAME.<random>.tmp", beside it


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write `path` all-or-nothing: a temp file beside it, fsync, rename over it, fsync the folder.

    A crash (or an exception inside the with-block) leaves any previous file intact and no
    half-written one behind; the folder's fsync makes the rename itself survive a power loss."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=TEMP_SUFFIX)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened (Windows)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_temp_files(directory, name_pattern):
    """Delete the temp files that atomic_write left in `directory` when a process was killed
    mid-write, for target names matching the regex `name_pattern`."""
    for entry in os.listdir(directory) if os.path.isdir(directory) else ():
        if entry.startswith(".") and entry.endswith(TEMP_SUFFIX):
            target = entry[1:].rsplit(".", 2)[0]  # ".NAME.<random>.tmp" -> NAME
            if re.fullmatch(name_pattern, target):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, entry))


def hold_lock(directory, name, in_use):
    """Lock `directory` for this process with the file directory/name, which holds our pid; returns
    the open file, to keep for as long as the folder is ours (closing it releases the lock).

    Another process holding it is refused with UserError(`in_use` with "{pid}" made the holder's
    pid). The OS drops the lock when its process ends, however it ends (even kill -9), so a lock
    never goes stale. A POSIX record lock (lockf), not flock: worker processes forked by the holder
    do not inherit it, so a killed holder's leftover workers cannot keep the folder locked (its one
    catch: closing any other file open on the lock file drops it, so nothing else opens that file).
    An OSError (no such folder, not writable) is the caller's to word."""
    import fcntl  # here, not at the top: Windows has no fcntl, and every script imports this module
    path = os.path.join(directory, name)
    while True:
        lock = open(path, "a+")
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0, os.SEEK_SET)  # the whole file
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):  # the two ways "held by another" is said
                lock.close()
                raise
            lock.seek(0)
            holder = lock.read().strip() or "?"  # "?": it has the lock but has not written its pid yet
            lock.close()
            raise UserError(in_use.replace("{pid}", holder)) from None
        # The previous holder may have deleted the file (release_lock) after we opened it: we would
        # hold a lock on a file no one else can open; so take the one now at `path` instead.
        with contextlib.suppress(FileNotFoundError):
            here, ours = os.stat(path), os.fstat(lock.fileno())
            if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
                break
        lock.close()
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def release_lock(lock):
    """Delete the file of a lock hold_lock took, then release it, leaving no trace in the folder."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(lock.name)
    lock.close()


def write_json(path, obj):
    """obj as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def read_json(path, advice=""):
    """The parsed JSON of `path`, or a one-line UserError naming it (plus `advice`, if given)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise UserError(f"{path}: not found" + (f"; {advice}" if advice else "")) from None
    except (OSError, ValueError) as e:  # unreadable, a directory, bad JSON, not UTF-8
        raise UserError(f"{path}: cannot read it as JSON ({one_line(e)})"
                        + (f"; {advice}" if advice else "")) from None


def file_sha256(path):
    """The sha256 hex digest of a file, read in 16 MB blocks (shards are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(what):
    """Where downloads of kind `what` (e.g. "hellaswag") are kept: $GPT2_REPRO_CACHE/what, else
    $XDG_CACHE_HOME/gpt2-repro/what, else ~/.cache/gpt2-repro/what. A per-user cache rather than
    a folder in the repository: checkouts stay clean and every run on the machine shares one copy."""
    base = os.environ.get("GPT2_REPRO_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "gpt2-repro")
    return os.path.join(base, what)
