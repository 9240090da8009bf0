"""Files and folders on the simulated PVE nodes."""

from __future__ import annotations

from typing import Any

STANDARD_DIRS = frozenset(
    {
        "/",
        "/root",
        "/tmp",
        "/var",
        "/var/tmp",
        "/var/lib",
        "/var/lib/vz",
        "/var/lib/vz/template",
        "/var/lib/vz/template/iso",
        "/var/lib/vz/template/cache",
        "/var/lib/vz/images",
        "/var/lib/vz/dump",
        "/var/lib/vz/snippets",
        "/var/lib/vz/import",
        "/etc",
        "/etc/pve",
        "/usr",
        "/usr/local",
        "/usr/local/bin",
        "/opt",
        "/mnt",
        "/mnt/pve",
        "/dev",
        "/home",
        "/srv",
    }
)


SPECIAL_FILES = frozenset({"/dev/null", "/dev/zero", "/dev/urandom"})


def download_content(url: str) -> bytes:
    """What a file downloaded from ``url`` holds in the simulation: one line naming the URL.

    The simulated nodes keep no downloaded bytes, only a size; this stands for them, the same for
    every download of a URL, so a digest of the file (``sha256sum``) can be computed and checked
    against one worked out from the URL (a runbook's checksum test)."""
    return f"simulated content of {url}\n".encode()


def file_content(record: dict[str, Any]) -> bytes | None:
    """A file's simulated content: the text a file step wrote, else what its source stands for
    (``download_content`` of the URL it came from, marked when ``xz -d`` unpacked it); None for a
    secret file step's content, which the state never keeps."""
    if "text" in record:
        return str(record["text"]).encode()
    if record.get("source") == "file step":
        return None
    data = download_content(str(record.get("source", "")))
    return data + b"(xz -d)\n" if record.get("decompressed_from") else data


class NodeFiles:
    """Files and folders on the simulated nodes, in a JSON-able dict (kept by reference, mutated in place).

    Layout: ``{node: {absolute path: {"type": "file", "size": int, "source": str, ...}}}``; folders a
    script created are ``{"type": "dir"}``. The usual PVE folders (``STANDARD_DIRS``) exist on every
    node without being listed, and so does every parent of a listed path.
    """

    def __init__(self, data: dict[str, dict[str, dict[str, Any]]] | None = None):
        self.data = data if data is not None else {}

    def _node(self, node: str) -> dict[str, dict[str, Any]]:
        return self.data.setdefault(node, {})

    def get(self, node: str, path: str) -> dict[str, Any] | None:
        """The file's record, or None (also for folders)."""
        entry = self.data.get(node, {}).get(path)
        return entry if entry is not None and entry.get("type", "file") == "file" else None

    def is_file(self, node: str, path: str) -> bool:
        return path in SPECIAL_FILES or self.get(node, path) is not None

    def is_dir(self, node: str, path: str) -> bool:
        if path in STANDARD_DIRS:
            return True
        entries = self.data.get(node, {})
        entry = entries.get(path)
        if entry is not None:
            return entry.get("type") == "dir"
        prefix = path.rstrip("/") + "/"
        return any(other.startswith(prefix) for other in entries)

    def exists(self, node: str, path: str) -> bool:
        return self.is_file(node, path) or self.is_dir(node, path)

    def put(self, node: str, path: str, size: int, **meta: Any) -> dict[str, Any]:
        """Record a file (replacing any file there) and return its record."""
        record = {"type": "file", "size": int(size), **meta}
        self._node(node)[path] = record
        return record

    def mkdir(self, node: str, path: str) -> None:
        if not self.is_dir(node, path):
            self._node(node)[path] = {"type": "dir"}

    def move(self, node: str, source: str, target: str) -> None:
        """Rename a file, or a folder with everything under it, to ``target`` (replacing a file there)."""
        entries = self._node(node)
        prefix = source.rstrip("/") + "/"
        for old in [p for p in entries if p == source or p.startswith(prefix)]:
            entries[target + old[len(source) :]] = entries.pop(old)

    def remove(self, node: str, path: str) -> None:
        """Remove a file, or a folder with everything under it."""
        entries = self._node(node)
        prefix = path.rstrip("/") + "/"
        for other in [p for p in entries if p == path or p.startswith(prefix)]:
            del entries[other]

    def paths(self, node: str) -> list[str]:
        return sorted(self.data.get(node, {}))
