"""The system tools the end-to-end tests drive, and what a test does when one is missing.

Outside CI a missing tool skips the test that needs it, naming the tool and the one command that
installs it; with ``CI=true`` it fails the test instead, because CI must run every test.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: tool -> the Debian package that carries it (what tests/install-tools.sh installs).
PACKAGES = {
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "pass": "pass",
    "gpg": "gnupg",
    "gpgconf": "gnupg",
    "chromium": "chromium",
}


def find_tool(name: str) -> str:
    """The tool's absolute path; skip the test (fail it in CI) when it is not installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found:
        return os.path.abspath(found)
    message = (
        f"{name} is not installed (Debian package {PACKAGES.get(name, name)}); "
        "'bash tests/run.sh' installs it where it may, or prints the command to run"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}. CI must run every test.", pytrace=False)
    pytest.skip(message)
