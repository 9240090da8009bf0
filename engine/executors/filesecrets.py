"""What of a ``secret: true`` file to mask in every output: the content, and the values in it.

A later step rarely prints a secret file whole: it greps one key, or ``talosctl`` echoes a
certificate. So besides the whole content, every string value of a YAML or JSON document (and each
line of a multi-line value) is masked on its own, and for text each line. Keys are not: they name
what is secret, they are not it. Short values (a key's ``true``, a port) are left out:
they are not what makes the file secret, and masking them would blank out every output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

#: Characters a part of a secret file must have to be masked on its own (tokens and keys are far longer).
MIN_PART = 8


def secret_parts(content: str, format: str) -> list[str]:
    """The content whole, then each value (yaml/json) or each line (text) long enough to be a secret."""
    parts = [content, content.strip()]
    document: Any = None
    try:
        if format == "json":
            document = json.loads(content)
        elif format == "yaml":
            document = list(yaml.safe_load_all(content))
    except (ValueError, yaml.YAMLError):
        document = None
    if document is not None:
        parts += [value for value in _strings(document) if len(value) >= MIN_PART]
    else:  # text: a token, a key, a password file; its lines are the values
        parts += [line.strip() for line in content.splitlines() if len(line.strip()) >= MIN_PART]
    return list(dict.fromkeys(part for part in parts if part))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
        yield from (line.strip() for line in value.splitlines() if line.strip())
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
