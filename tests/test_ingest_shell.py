"""The pieces of ingest that are pure functions: shell parsing, credential redaction, command
classification, and the jq extract a curl pipeline becomes."""

from __future__ import annotations

import pytest

from engine.ingest.adapt import Adapter
from engine.ingest.classify import Classifier
from engine.ingest.convert import html_to_markdown, text_to_markdown
from engine.ingest.page import Code, split_document
from engine.ingest.redact import redact, safe_source
from engine.load.config import ClusterConfig
from engine.load.yamlsource import read_yaml_file
from engine.shell.parse import Compound, ShellSyntaxError, Simple, parse, tokenize
from tests.conftest import REPO


def _words(src: str) -> list[list[str]]:
    script = parse(src)
    return [
        [w.text for w in c.words]
        for u in script.units
        for p in u.pipelines
        for c in p.commands
        if isinstance(c, Simple)
    ]


def test_continuations_quotes_and_substitutions_are_one_word_each() -> None:
    src = (
        'curl -sk \\\n  -H "Authorization: X=$(pass show a/b | head -1)=$(pass show a/b | tail -1)" \\\n'
        "  'https://h:8006/api2/json/x?y=1' | jq '.data[] | {a}'\n"
    )
    assert _words(src) == [
        [
            "curl",
            "-sk",
            "-H",
            "Authorization: X=$(pass show a/b | head -1)=$(pass show a/b | tail -1)",
            "https://h:8006/api2/json/x?y=1",
        ],
        ["jq", ".data[] | {a}"],
    ]
    word = parse(src).units[0].pipelines[0].commands[0].words[3]
    assert [p.kind for p in word.parts] == ["lit", "subst", "lit", "subst"] and all(p.quote == '"' for p in word.parts)


def test_nested_substitutions_escapes_and_variables() -> None:
    word = parse('echo "a $(echo "$(date +%s) )") b" ${VMID}x \\$HOME\n').units[0].pipelines[0].commands[0].words
    assert word[1].text == 'a $(echo "$(date +%s) )") b'
    assert [(p.kind, p.text) for p in word[2].parts] == [("var", "VMID"), ("lit", "x")]
    assert word[3].literal == "$HOME"


def test_operators_lists_and_redirections() -> None:
    script = parse("a && b || c; d | e 2>&1 > /tmp/out &\nf\n")
    assert [u.ops for u in script.units] == [["&&", "||"], [], []]
    assert script.units[1].background
    e = script.units[1].pipelines[0].commands[1]
    assert [(op, w.text if w else None) for op, w in e.redirects] == [("2>&", "1"), (">", "/tmp/out")]


def test_loops_keep_their_variable_items_and_body() -> None:
    loop = parse("for vmid in 101 102 {1..3}; do\n  qm start $vmid\ndone\n").units[0].pipelines[0].commands[0]
    assert isinstance(loop, Compound) and loop.kind == "for" and loop.var == "vmid"
    assert [w.text for w in loop.items or []] == ["101", "102", "{1..3}"]
    assert [[w.text for w in c.words] for c in [loop.body[0].pipelines[0].commands[0]]] == [["qm", "start", "$vmid"]]
    piped = parse('echo "$X" | while read a b; do echo $a; done\n').units[0].pipelines[0].commands
    assert isinstance(piped[1], Compound) and piped[1].kind == "while"


def test_heredocs_belong_to_their_command() -> None:
    src = "cat <<EOF > /tmp/x\nhello $name\nEOF\nqm list\n"
    script = parse(src)
    assert src[script.units[0].start : script.units[0].end] == "cat <<EOF > /tmp/x\nhello $name\nEOF\n"
    assert script.units[0].pipelines[0].commands[0].heredoc
    assert _words(src)[1] == ["qm", "list"]


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("echo 'open", "a single quote is never closed (at line 1)"),
        ('echo "open', "a double quote is never closed"),
        ("echo $(date", "a $( is never closed (at line 1)"),
        ("for x in a b; do echo $x", "expected 'done', but the text ends"),
        ("cat <<EOF\nno end\n", "never closed"),
    ],
)
def test_text_outside_the_subset_is_refused_with_a_reason(src: str, message: str) -> None:
    with pytest.raises(ShellSyntaxError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        parse(src)


def test_comments_are_kept_apart() -> None:
    script = parse("# first\nqm list # trailing\n")
    assert [text for _, text in script.comments] == ["# first", "# trailing"]
    assert [t.kind for t in tokenize("a # b\n")] == ["word", "comment", "newline"]


def test_redaction_covers_the_forms_tokens_take() -> None:
    text = (
        '-H "Authorization: PVEAPIToken=$(pass show x | head -1)=$(pass show x | tail -1)"\n'
        "PVEAPIToken=root@pam!ci=8e3f2c1a-5b6d-4e7f-9a0b-1c2d3e4f5a6b\n"
        "export PROXMOX_TOKEN=root@pam!t=abcdef0123456789\n"
        '-d "username=root@pam&password=Hunter2!"\n'
        "curl -u admin:pa55word https://h\n"
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig\n"
        "https://admin:pw123@host/x\n"
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        "pveum user token add u t --privsep 0\n"
    )
    result = redact(text)
    for secret in ("pass show", "8e3f2c1a", "abcdef0123456789", "Hunter2", "pa55word", "eyJhbGci", "pw123", "AAAA"):
        assert secret not in result.text, secret
    assert "pveum user token add u t --privsep 0" in result.text  # commands themselves stay
    assert "Authorization header" in result.summary()
    assert safe_source("https://u:p@h/x?a=1&api_token=zz") == "https://h/x?a=1&api_token=[redacted]"


def _adapter() -> tuple[Classifier, Adapter]:
    doc = read_yaml_file(REPO / "cluster-config.yaml", "cluster-config.yaml")
    classifier = Classifier()
    return classifier, Adapter(ClusterConfig(doc.data, doc).data, classifier)


def _draft(src: str):  # noqa: ANN202 - a Draft
    classifier, _ = _adapter()
    drafts = classifier.block(Code(src, "bash", 1, "Heading"))
    assert len(drafts) == 1, drafts
    return drafts[0]


@pytest.mark.parametrize(
    ("src", "method", "path", "params"),
    [
        (
            "curl -X DELETE 'https://h:8006/api2/json/nodes/pve1/qemu/100?purge=1&destroy-unreferenced-disks=1'",
            "DELETE",
            "/nodes/pve1/qemu/100",
            [("purge", "1"), ("destroy-unreferenced-disks", "1")],
        ),
        (
            "curl -d name=a -d 'size=+10G' --data-urlencode 'description=a b&c' https://h/api2/json/x",
            "POST",
            "/x",
            [("name", "a"), ("size", "+10G"), ("description", "a b&c")],
        ),
        ("curl -G -d type=vm https://h/api2/json/cluster/resources", "GET", "/cluster/resources", [("type", "vm")]),
        ("curl -sSkX PUT --data 'a=%2Fx' https://h/api2/json/y", "PUT", "/y", [("a", "/x")]),
        (
            "pvesh create /nodes/pve1/qemu/120/migrate --target pve3 --online=1 --output-format json",
            "POST",
            "/nodes/pve1/qemu/120/migrate",
            [("target", "pve3"), ("online", "1")],
        ),
        (
            "ssh root@pve1 'pvesh set /nodes/pve1/qemu/1/config --cores 2'",
            "PUT",
            "/nodes/pve1/qemu/1/config",
            [("cores", "2")],
        ),
    ],
)
def test_api_calls_become_api_drafts(src: str, method: str, path: str, params: list[tuple[str, str]]) -> None:
    draft = _draft(src)
    assert (draft.kind, draft.method, draft.path, draft.params) == ("api", method, path, params)


@pytest.mark.parametrize(
    ("src", "kind", "why", "gated"),
    [
        ("kubectl get nodes", "local", None, False),  # only reads: changes: []
        ("curl https://example.com/file.tar.gz -o /tmp/f", "local", None, False),  # declares the download
        ("terraform apply", "local", None, True),  # effect unknown
        ("curl -d @body.json https://h/api2/json/x", "local", "sends data from a file", True),
        (
            "ssh root@pve1 'qm list' | grep running",
            "local",
            "pipes the node's output into commands on this machine",
            True,
        ),
        ("talosctl --nodes $(cat ip) health", "local", "talosctl steps run without a shell", True),
        ("qm stop 100 || true", "ssh", "uses ||", True),
        ("ssh admin@pve1 'qm list && pct list'", "ssh", None, False),
        ("wget -O /var/lib/vz/template/iso/x.iso https://e/x.iso", "ssh", None, False),
    ],
)
def test_what_each_command_becomes(src: str, kind: str, why: str | None, gated: bool) -> None:
    draft = _draft(src)
    assert draft.kind == kind
    assert (draft.attrs.get("review") is True) == gated
    if why:
        assert any(why in w for w in draft.warnings), draft.warnings


def test_credential_commands_make_no_step() -> None:
    classifier, _ = _adapter()
    assert [d.kind for d in classifier.block(Code("pass show pve/token\n", "bash", 3, None))] == ["none"]
    assert classifier.skipped[0].line == 3 and "credential handling" in classifier.skipped[0].what
    assert classifier.block(Code("TOKEN=[redacted]\n", "bash", 4, None)) == []


def test_the_token_in_a_local_command_moves_to_api_token_env() -> None:
    draft = _draft("PROXMOX_API_TOKEN=[redacted] ansible-playbook -i inv site.yaml")
    assert draft.kind == "local" and draft.attrs["api_token_env"] == "PROXMOX_API_TOKEN"
    _, adapter = _adapter()
    assert adapter.adapt(draft, "play").body == "ansible-playbook -i inv site.yaml\n"


@pytest.mark.parametrize(
    ("jq_filter", "extract"),
    [
        (".data[] | {vmid}", ".[] | {vmid}"),
        ("[.data[].vmid] | sort", "[.[].vmid] | sort"),
        (".data | {status, pid}", "{status, pid}"),
        (
            "{cpu: .data.cpu, used: (.data.memory.total - .data.memory.used)}",
            "{cpu: .cpu, used: (.memory.total - .memory.used)}",
        ),
        (
            '.data[] | select(.tags // "" | split(";") | any(. == "<TAG>"))',
            '.[] | select(.tags // "" | split(";") | any(. == "\\($tag)"))',
        ),
    ],
)
def test_jq_after_curl_becomes_the_extract_of_the_data(jq_filter: str, extract: str) -> None:
    from engine.ingest.classify import protect

    draft = _draft(protect(f"curl https://h/api2/json/cluster/resources | jq '{jq_filter}'"))
    _, adapter = _adapter()
    assert adapter.adapt(draft, "x").attrs["extract"] == extract


def test_html_keeps_prose_and_fences_pre_blocks() -> None:
    title, markdown, _ = html_to_markdown(
        "<html><head><title>T &amp; U</title><script>x()</script></head><body>"
        "<nav>menu</nav><h1>Head</h1><p>Text <b>bold</b></p>"
        '<pre><code class="language-sh">qm list\n</code></pre></body></html>'
    )
    assert title == "T & U"
    assert markdown == "# Head\n\nText **bold**\n\n```sh\nqm list\n```\n"


def test_plain_text_lines_that_are_commands_are_fenced() -> None:
    title, markdown, _ = text_to_markdown("Title here\n\nSome words.\n\n$ qm start 100\nqm status 100\n\nMore words.\n")
    assert title == "Title here"
    assert "```console\n$ qm start 100\n$ qm status 100\n```" in markdown and "More words." in markdown


def test_console_prompts_and_output_lines() -> None:
    doc = split_document(
        "# T\n\n```console\n$ qm list\n      VMID NAME\n       100 a\nroot@pve1:~# qm status 100\n"
        "status: running\n```\n\n```yaml\nkey: v\n```\n\n```API {id: x}\nGET /\n```\n"
    )
    code = doc.code
    assert [c.text for c in code] == ["qm list\nqm status 100\n"] and code[0].dropped_output == 3
    prose = "".join(b.text for b in doc.blocks if not isinstance(b, Code))
    assert "```yaml\nkey: v" in prose and "```text\nGET /" in prose  # a prose fence can never become a step
