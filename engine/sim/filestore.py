"""Files a ``file`` step writes on a simulated node: kept in ``NodeFiles`` with their mode and digest.

The simulated node answers a file step as the real one does (``engine.executors.file.SshFiles``):
the folder must exist, a file holding the same content and mode is left alone, anything else is
replaced whole. The state keeps the size, mode and digest, and the text of a file that is not
secret (for the review's diff); a secret file's content never reaches the saved state.
"""

from __future__ import annotations

import hashlib
import posixpath

from ..executors.file import FileState, Missing
from .nodefiles import NodeFiles

#: The simulated nodes' login user's home, for ``~``.
HOME = "/root"


class SimNodeFileStore:
    """One simulated node's files, as a ``FileStore``."""

    def __init__(self, files: NodeFiles, node: str, *, secret: bool):
        self.files = files
        self.node = node
        self.secret = secret
        self.where = f"node {node}"

    def _resolve(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = HOME + path[1:]
        resolved = posixpath.normpath(path)
        if not self.files.is_dir(self.node, posixpath.dirname(resolved)):
            raise Missing(posixpath.dirname(resolved))
        return resolved

    def read(self, path: str, *, text: bool) -> FileState | None:
        record = self.files.get(self.node, self._resolve(path))
        if record is None:
            return None
        return FileState(
            str(record.get("mode", "644")),
            int(record.get("size", 0)),
            str(record.get("sha256", "")),
            record.get("text") if text else None,
        )

    def write(self, path: str, data: bytes, mode: int, sha256: str) -> tuple[str, bool]:
        resolved = self._resolve(path)
        record = self.files.get(self.node, resolved)
        if record is not None and record.get("sha256") == sha256 and record.get("mode") == f"{mode:o}":
            return resolved, False
        meta = {"source": "file step", "mode": f"{mode:o}", "sha256": hashlib.sha256(data).hexdigest()}
        if not self.secret:
            meta["text"] = data.decode(errors="replace")
        self.files.put(self.node, resolved, len(data), **meta)
        return resolved, True
