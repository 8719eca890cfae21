"""All-or-nothing writes: a file or folder is written beside its target under a temporary name
and takes the target's place only when complete, so a reader sees the old one or the new one,
never half of either, and a failed run leaves nothing behind.  Used for scores and rejects
files, model folders and Spark's output directories alike."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class Staged:
    """A path to write into (`path`) beside `target`; `commit` puts it in the target's place
    (replacing what is there), `discard` removes it.  As a context manager it commits when the
    block ends without an error and discards otherwise.

    A file is created (empty, with the permissions the umask gives a new file).  A folder's path
    does not exist yet: the writer makes it (Spark insists on that), inside a private folder of
    its own beside the target."""

    def __init__(self, target: Path | str, folder: bool = False) -> None:
        self.target, self.folder = Path(target), folder
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            self._holder = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
            self.path = self._holder / self.target.name
        else:
            handle, name = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".partial")
            os.close(handle)
            os.chmod(name, 0o666 & ~_umask())         # mkstemp's 0600 would outlive the rename
            self._holder, self.path = None, Path(name)

    def commit(self) -> None:
        if not self.folder:
            os.replace(self.path, self.target)
            return
        self.path.chmod(0o755)          # readable by the serving user, as a new folder would be
        if self.target.is_dir():        # a folder cannot be renamed onto another: swap them
            retired = self._holder / ".retired"
            os.replace(self.target, retired)
            try:
                os.replace(self.path, self.target)
            except BaseException:       # put the previous folder back before reporting the failure
                os.replace(retired, self.target)
                raise
        else:
            if self.target.exists():
                self.target.unlink()
            os.replace(self.path, self.target)
        shutil.rmtree(self._holder, ignore_errors=True)

    def discard(self) -> None:
        if self.folder:
            shutil.rmtree(self._holder, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if exc is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
