"""curl's command line as data: its options in order, with their values, and its URLs.

Two parts of runbook read curl commands: ingest turns ``curl .../api2/json/...`` into an ``api``
step (method, data, headers), and the simulated PVE nodes run ``curl -fsSLo FILE URL`` downloads.
Both split the options here, so ``-sSkX PUT`` or ``-fsSLo/tmp/x`` mean the same flags to both;
what each does with an option (keep it, drop it with a note, refuse it) stays with each.
"""

from __future__ import annotations

from dataclasses import dataclass

# Long options that take a value (``--name value`` or ``--name=value``).
_VALUE_OPTIONS = frozenset(
    {
        "--request",
        "--data",
        "--data-raw",
        "--data-binary",
        "--data-ascii",
        "--data-urlencode",
        "--header",
        "--output",
        "--write-out",
        "--user",
        "--cookie",
        "--cookie-jar",
        "--cacert",
        "--capath",
        "--cert",
        "--key",
        "--max-time",
        "--connect-timeout",
        "--continue-at",
        "--retry",
        "--retry-delay",
        "--retry-max-time",
        "--referer",
        "--user-agent",
        "--form",
        "--upload-file",
        "--resolve",
        "--url",
        "--proxy",
        "--limit-rate",
        "--config",
        "--pinnedpubkey",
        "--interface",
        "--range",
    }
)
# Letters of short options that take a value (``-X PUT``, ``-XPUT``, ``-sSkX PUT``).
_SHORT_VALUES = frozenset("XdHowubcmeAFTxKrEC")
DATA_OPTIONS = ("-d", "--data", "--data-raw", "--data-binary", "--data-ascii", "--data-urlencode")


@dataclass(frozen=True)
class Curl:
    """A curl command's options (clusters split: ``-fsS`` is ``-f -s -S``; value None when it is
    missing at the end) and its URLs, in the order written."""

    options: tuple[tuple[str, str | None], ...]
    urls: tuple[str, ...]

    def has(self, *names: str) -> bool:
        return any(option in names for option, _ in self.options)

    def value(self, *names: str) -> str | None:
        """The value of the last of these options given, None when there is none."""
        found = [value for option, value in self.options if option in names]
        return found[-1] if found else None

    @property
    def method(self) -> str | None:
        """The method ``-X`` names (upper case; "" when its value is missing), None without ``-X``."""
        if not self.has("-X", "--request"):
            return None
        return (self.value("-X", "--request") or "").upper()

    @property
    def data(self) -> list[tuple[str, str]]:
        """(option, value) of each ``-d``/``--data*`` in order."""
        return [(option, value or "") for option, value in self.options if option in DATA_OPTIONS]


def takes_value(option: str) -> bool:
    """Whether ``option`` (as in ``Curl.options``) is one that takes a value."""
    return option in _VALUE_OPTIONS or (len(option) == 2 and option[1] in _SHORT_VALUES)


def parse_curl(args: list[str]) -> Curl:
    """The options and URLs of curl's arguments (the words after ``curl``)."""
    options: list[tuple[str, str | None]] = []
    urls: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            if sep:
                options.append((name, value))
            elif name in _VALUE_OPTIONS:
                options.append((name, args[index] if index < len(args) else None))
                index += 1
            else:
                options.append((name, None))
        elif arg.startswith("-") and len(arg) > 1:
            for position, letter in enumerate(arg[1:], start=2):
                if letter not in _SHORT_VALUES:
                    options.append((f"-{letter}", None))
                    continue
                if arg[position:]:
                    options.append((f"-{letter}", arg[position:]))
                else:
                    options.append((f"-{letter}", args[index] if index < len(args) else None))
                    index += 1
                break
        else:
            urls.append(arg)
    return Curl(tuple(options), tuple(urls))
