"""Secrets on ingested pages: removed in every form, never printed, and turned into what a runbook needs.

- ``redact`` removes tickets, CSRF tokens, passwords, token secrets, private keys and JWTs in every
  form a page writes them (JSON, headers, URLs, flags, YAML, code, prose), plus what detect-secrets
  knows (vendors' tokens), and leaves the markdown as it rendered: only values are replaced.
- A value the procedure needs (a new user's password) becomes a required ``secret: true``
  parameter, never a literal or ``[redacted]``; a new API token's secret goes into pass
  (``to_pass``), which a real run against the simulated cluster and a real pass store proves.
- Every output of ingest, show, trust, validate and the dry-run is searched for every known value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown_it import MarkdownIt

from engine.ingest.redact import MARK, redact
from engine.load.config import load_config
from engine.load.home import Home
from engine.run.execution import start_run
from engine.run.secretparams import SecretInput
from engine.run.topass import insert
from engine.runbook.parser import parse_runbook_file
from engine.sim.wiring import Simulation
from tests.support.approvers import Yes
from tests.support.passstore import PassStore, pass_store

CORPUS = Path(__file__).resolve().parent / "ingest_corpus"
SECRET_PAGES = ("api-automation-login.md", "ci-user-token.html")
THROWAWAY = "run-time-Secret-4d1c"

# ------------------------------------------------------------------------------------ redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('    "ticket": "PVE:root@pam:6752A1F0::Xk3jR9vQm2LwP8sTz4Hb6NcY/Oq+Ri3Uw==",', "Xk3jR9vQm2LwP8sTz4Hb6NcY"),
        ('{"CSRFPreventionToken":"6752A1F0:9fQ2xL7vK3mN8pR1tW5yZ0bC4dG6hJ"}', "9fQ2xL7vK3mN8pR1tW5yZ0bC4dG6hJ"),
        ("Cookie: PVEAuthCookie=PVE%3Aroot%40pam%3A6752A1F0%3A%3AXk3jR9vQm2LwP8sT%2FOq", "Xk3jR9vQm2LwP8sT"),
        ("CSRFPreventionToken: 6752A1F0:9fQ2xL7vK3mN8pR1tW5yZ0bC4dG6hJ", "9fQ2xL7vK3mN8pR1tW5yZ0bC4dG6hJ"),
        ("TICKET='PVE:root@pam:6752A1F0::Xk3jR9vQm2LwP8sTz4Hb6NcY=='", "Xk3jR9vQm2LwP8sTz4Hb6NcY"),
        ("CSRF=6752A1F0:9fQ2xL7vK3mN8pR1tW5yZ0bC4dG6hJ", "9fQ2xL7vK3mN8pR1tW5yZ0bC4dG6hJ"),
        ("curl -k https://root:Sup3rS3cret-url@pve1.example.com:8006/api2/json/version", "Sup3rS3cret-url"),
        ("pvesh create /access/users --userid ci@pve --password 'S3cret pass!2024'", "S3cret pass!2024"),
        ("pveum passwd ci@pve --password=hunter2hunter2", "hunter2hunter2"),
        ("curl -H 'Authorization: PVEAPIToken=ci@pve!auto=5c0e2d9a-8b1f-4c3e-9d7a-2e6f4b8c1a90' x", "5c0e2d9a"),
        ("My token is root@pam!test=0d1e2f3a4b5c4d6e8f708192 if anyone wants it", "0d1e2f3a4b5c4d6e8f708192"),
        ("```yaml\nPVE_TOKEN_SECRET: plainword\n```", "plainword"),
        ('api_password = "Tr0ub4dor&3-pve"', "Tr0ub4dor&3-pve"),
        ("**Password:** hunter22 (change it)", "hunter22"),
        ("The password=opensesame works", "opensesame"),
        ("curl -u root:pa55word https://pve1:8006/api2/json/nodes", "pa55word"),
        ("id token `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaS1ydW5uZXIifQ.c2lnbmF0dXJlLXZhbHVl`", "c2lnbmF0dXJlLXZhbHVl"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH PRIVATE KEY-----",
            "b3BlbnNzaC1rZXktdjE",
        ),
        # A Talos or Kubernetes config pasted on a page: its private keys are base64-encoded PEM blocks.
        (
            "    key: " + base64.b64encode(b"-----BEGIN ED25519 PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIE").decode(),
            "LS0tLS1CRUdJTiBFRDI1NTE5",
        ),
        ("  aescbcEncryptionSecret: z01mye6j16bspJYtTB/5SFX8j7Ahzr/35ZoL3ZbMhGY=", "z01mye6j16bspJYtTB"),
        # What only detect-secrets knows: vendors' token formats (and the whole token, not its prefix).
        ("export AWS_ACCESS_KEY_ID=AKIAZ3MHPLQT7XYVW4RB", "AKIAZ3MHPLQT7XYVW4RB"),
        ("gh auth with ghp_4fKq9ZbLmN2pXr7TvW1yS8dA3cE6hJ0uI5oQ today", "4fKq9ZbLmN2pXr7TvW1yS8dA3cE6hJ0uI5oQ"),
        ("notify: xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
        ('  join_key: "kLq8Zr2Vm9Xn4Bt7Wy1Pc6Hd3Jf5Gs0A"', "kLq8Zr2Vm9Xn4Bt7Wy1Pc6Hd3Jf5Gs0A"),
    ],
)
def test_each_form_of_a_credential_is_removed(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned.text, cleaned.text
    assert MARK in cleaned.text and cleaned.counts
    assert secret not in cleaned.summary()


@pytest.mark.parametrize(
    "text",
    [
        "**Creating an API Token:** tickets expire, so a cron job is better off with a token.",
        "Set the *password* in the GUI; the `secret` is shown once. See [the token docs](https://x/y#tokens).",
        "A ticket is valid for two hours. Token: see below. Password: the one you chose.",
        '```bash\necho "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  talos.iso" | sha256sum -c\n```',
        "factory.talos.dev/installer/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515:v1.9.5",
        "pvesh set /access/acl --path / --roles PVEVMAdmin --tokens 'ci@pve!automation'",
        'cluster:\n  endpoint: "https://203.0.113.17:6443"\n  ip = "198.51.100.23"',
        "    crt: " + base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIBPzCB8qADAgECAhEA").decode(),
        "Send the **Authorization:** header with every call.",
    ],
)
def test_prose_and_public_values_are_left_alone(text: str) -> None:
    """Words after a credential-like label in a sentence, checksums and token ids are no secrets."""
    assert redact(text).text == text


def _rendered(text: str) -> list[tuple[str, str]]:
    """The markdown's structure as a viewer renders it: every block and inline token, and link targets."""
    out: list[tuple[str, str]] = []
    for token in MarkdownIt("commonmark").parse(text):
        out.append((token.type, token.tag))
        for child in token.children or []:
            out.append((child.type, str(child.attrGet("href") or "")))
    return out


@pytest.mark.parametrize(
    "text",
    [
        "**Creating an API Token:** tickets expire. **Password:** hunter22 and _secret: s3cr3t!x_ end.",
        "**Authorization:** `Authorization: PVEAPIToken=root@pam!ci=abcdef123456` and **Cookie:** *PVEAuthCookie=x*",
        "Use `Authorization: PVEAPIToken=root@pam!ci=5c0e2d9a-8b1f-4c3e-9d7a-2e6f4b8c1a90` (see *Tokens*).",
        "Log in ([how](https://pve.example/wiki#login)) with token=abc123) and `password=x1y2z3`.",
        "| key | value |\n|---|---|\n| value | 5c0e2d9a-8b1f-4c3e-9d7a-2e6f4b8c1a90 |\n| ticket | PVE:a@pam:6752A1F0::Zx9= |",
        *[(CORPUS / name).read_text(encoding="utf-8") for name in SECRET_PAGES if name.endswith(".md")],
    ],
)
def test_redaction_never_breaks_the_markdown(text: str) -> None:
    cleaned = redact(text)
    assert cleaned.counts, "the sample holds a credential"
    assert _rendered(cleaned.text) == _rendered(text)


# ------------------------------------------------------------------------------------ ingest


def _page(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(body, encoding="utf-8")
    return page


def _ingest(cli: Callable[..., Any], home: Home, page: Path, name: str) -> tuple[Any, str]:
    result = cli("--home", str(home.root), "ingest", str(page), "--name", name, "--yes")
    assert result.exit_code == 0, result.stdout + result.stderr
    return result, (home.runbooks_dir / f"{name}.md").read_text(encoding="utf-8")


def test_a_url_with_user_and_password_becomes_an_api_step(
    cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    """Once a traceback: the redacted ``root:[redacted]@host`` was read as an IPv6 host."""
    home = make_home()
    page = _page(
        tmp_path,
        "# Version\n\n```bash\ncurl -k https://root:Hunter2pw@pve1.example.com:8006/api2/json/version\n```\n",
    )
    result, text = _ingest(cli, home, page, "version")
    assert "```api {id: " in text and "GET /version" in text
    assert "the user and password in the URL" in result.stdout
    assert "Hunter2pw" not in result.stdout + result.stderr + text


PASSWORD_PAGE = """# A user for the backup job

```bash
pvesh create /access/users --userid backup@pve --password 'Bk-Pass!2024' --comment "backup job"
curl -k -X PUT -H 'Authorization: PVEAPIToken=root@pam!x=5c0e2d9a-8b1f-4c3e-9d7a-2e6f4b8c1a90' \\
  --data 'userid=backup@pve&password=Other-Pass-99' https://pve1:8006/api2/json/access/password
pveum user token add backup@pve nightly --privsep 0 --comment nightly
```
"""


def test_a_password_the_procedure_needs_is_a_required_secret_parameter(
    cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    home = make_home()
    result, text = _ingest(cli, home, _page(tmp_path, PASSWORD_PAGE), "backup-user")
    runbook = parse_runbook_file(home.runbooks_dir / "backup-user.md", "runbooks/backup-user.md")
    password = next(p for p in runbook.parameters if p.name == "password")
    assert password.secret and password.default is None and password.required
    user = next(s for s in runbook.steps if "POST /access/users" in s.body)
    assert 'password: "{{ password }}"' in user.body
    assert MARK not in "".join(step.body for step in runbook.steps), "never a literal placeholder as a value"
    assert "secret parameter password" in result.stdout
    token = next(s for s in runbook.steps if "token/nightly" in s.body)
    assert token.kind == "api" and token.attrs["to_pass"] == {
        "path": "proxmox/{{ config.cluster.name }}/tokens/backup@pve/nightly",
        "lines": ["full-tokenid", "value"],
        "secret": ["value"],
    }
    for value in ("Bk-Pass!2024", "Other-Pass-99", "5c0e2d9a"):
        assert value not in result.stdout + result.stderr + text
    # Without the secret the dry-run says which one and how to give it.
    missing = cli("--home", str(home.root), "run", "backup-user", "--simulate", "--dry-run")
    assert missing.exit_code == 1
    assert "--secret password=env:VAR" in missing.stderr
    given = cli(
        "--home",
        str(home.root),
        "run",
        "backup-user",
        "--simulate",
        "--dry-run",
        "--secret",
        "password=env:BACKUP_PW",
        env={"BACKUP_PW": THROWAWAY},
    )
    assert given.exit_code == 0, given.stdout + given.stderr
    assert "password=*MASKED*" in given.stdout and THROWAWAY not in given.stdout + given.stderr


def test_a_token_made_inside_a_shell_script_is_gated_with_a_warning(
    cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    """Where the call cannot be an api step with to_pass, the step that would print the secret waits for review."""
    home = make_home()
    page = (
        "# Token\n\n```bash\ncd /root\nssh root@pve1 pveum user token add ci@pve t2 --privsep 0 | tee token.txt\n```\n"
    )
    result, _ = _ingest(cli, home, _page(tmp_path, page), "token-script")
    runbook = parse_runbook_file(home.runbooks_dir / "token-script.md", "runbooks/token-script.md")
    (step,) = runbook.steps
    assert step.attrs.get("review") is True
    assert "it creates an API token, whose secret it prints once" in result.stderr + result.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    with pass_store(tmp_path_factory.mktemp("pass")) as made:
        yield made


def test_a_new_tokens_secret_goes_into_pass_and_nowhere_else(
    cli: Callable[..., Any],
    make_home: Callable[..., Home],
    tmp_path: Path,
    store: PassStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CI page's token step, run for real on the simulated cluster: the secret lands in a real pass store."""
    home = make_home()
    _ingest(cli, home, CORPUS / "ci-user-token.html", "ci-user")
    assert cli("--home", str(home.root), "trust", "ci-user", "--yes").exit_code == 0
    monkeypatch.setenv("CI_USER_PASSWORD", THROWAWAY)
    env = store.full_env()
    events: list[str] = []
    with Simulation(home, load_config(home)) as simulation:
        assert simulation.cluster is not None
        fake = simulation.cluster.fake
        # PVE ships the role PVEVMAdmin; the simulation knows only Administrator, NoAccess and PVEAuditor.
        simulation.cluster.do(lambda: fake.access["roles"].setdefault("PVEVMAdmin", ["VM.Audit", "VM.PowerMgmt"]))  # type: ignore[union-attr]
        dispatcher = simulation.dispatcher()
        dispatcher.pass_store = lambda path, lines: insert(path, lines, env)
        try:
            outcome = start_run(
                home,
                "ci-user",
                None,
                {},
                dispatcher=dispatcher,
                approver=Yes(),
                on_event=lambda kind, entry: events.append(json.dumps(entry.as_dict(), default=str)),
                secrets=SecretInput({"password": "env:CI_USER_PASSWORD"}),
            )
        finally:
            dispatcher.close()
        value = simulation.cluster.do(lambda: fake.apitokens.get("ci@pve!automation", ""))  # type: ignore[union-attr]
    assert outcome.status == "succeeded", outcome.message
    assert len(value) == 36
    assert store.show("proxmox/lab/tokens/ci@pve/automation") == f"ci@pve!automation\n{value}\n"
    everything = [*events, outcome.message, *outcome.warnings]
    everything += [
        p.read_text(errors="replace") for p in home.state_dir.rglob("*") if p.is_file() and p.suffix != ".pem"
    ]
    for text in everything:
        assert value not in text and THROWAWAY not in text


@pytest.mark.parametrize("name", SECRET_PAGES)
def test_no_command_shows_a_value_of_the_page(
    name: str, cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    """ingest, show, validate, trust and the dry-run's text and JSON, with every file they leave, grepped."""
    page = CORPUS / name
    want = yaml.safe_load(page.with_name(page.stem + ".expected.yaml").read_text(encoding="utf-8"))
    home = make_home()
    runbook = "secrets-" + page.stem
    secrets = [arg for key, source in (want.get("secrets") or {}).items() for arg in ("--secret", f"{key}={source}")]
    env = {"HOME": str(tmp_path), "CORPUS_SECRET": THROWAWAY}
    outputs = []
    for args in (
        ["ingest", str(page), "--name", runbook, "--yes"],
        ["show", runbook],
        ["validate"],
        ["trust", runbook, "--yes"],
        ["run", runbook, "--simulate", "--dry-run", *secrets],
        ["run", runbook, "--simulate", "--dry-run", "--json", *secrets],
    ):
        result = cli("--home", str(home.root), *args, env=env)
        assert result.exit_code == 0, f"{args}: {result.stdout}{result.stderr}"
        outputs.append(result.stdout + result.stderr)
    outputs += [p.read_text(errors="replace") for p in home.root.rglob("*") if p.is_file() and p.suffix != ".pem"]
    for value in [*want["absent"], THROWAWAY]:
        for output in outputs:
            assert value not in output, f"{value!r} shown"
