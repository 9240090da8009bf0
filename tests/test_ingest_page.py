"""Reading a page's structure: main content, sections, commands in paragraphs and after prompts.

The corpus pages (tests/ingest_corpus/) check the whole result on the simulated cluster; these check
each decision on its own, with the words ingest says about it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.ingest.classify import Classifier
from engine.ingest.convert import html_to_markdown, text_to_markdown
from engine.ingest.fetch import Source, _format
from engine.ingest.page import Code, Prose, split_document
from engine.ingest.pipeline import IngestError, only_reads, propose
from engine.ingest.sections import (
    FAQ,
    PREREQUISITES,
    PROCEDURE,
    QUICK_REFERENCE,
    REFERENCE,
    TROUBLESHOOTING,
    VERIFICATION,
    heading_class,
    is_listing,
    page_kind,
)
from engine.load.config import load_config
from engine.load.home import Home

# -- sections


@pytest.mark.parametrize(
    ("heading", "kind"),
    [
        ("Troubleshooting", TROUBLESHOOTING),
        ("If something goes wrong", TROUBLESHOOTING),
        ("Common problems", TROUBLESHOOTING),
        ("Quick reference", QUICK_REFERENCE),
        ("Cheat sheet", QUICK_REFERENCE),
        ("Useful commands", QUICK_REFERENCE),
        ("FAQ", FAQ),
        ("Frequently asked questions", FAQ),
        ("API reference", REFERENCE),
        ("Parameters", REFERENCE),
        ("Prerequisites", PREREQUISITES),
        ("Before you start", PREREQUISITES),
        ("Verification", VERIFICATION),
        ("Verify the cluster", VERIFICATION),
        ("Create the VM", PROCEDURE),
        ("Set the VM parameters", PROCEDURE),  # "parameters" alone is a reference, in a sentence it is not
        ("Optional: enable the guest agent", PROCEDURE),
    ],
)
def test_a_heading_s_words_give_its_section_class(heading: str, kind: str) -> None:
    assert heading_class(heading, None)[0] == kind


def test_sub_sections_inherit_their_parent_s_class_until_the_next_heading_of_its_level() -> None:
    doc = split_document(
        "# T\n\n## FAQ\n\n### Can I keep it?\n\nYes.\n\n```bash\nqm stop 1100\n```\n\n## Next steps\n\n"
        "```bash\nqm start 1100\n```\n"
    )
    first, second = doc.code
    assert first.kind == FAQ and first.section is not None and first.section.named is not None
    assert first.section.named.title == "FAQ"
    assert second.kind == PROCEDURE


def test_a_section_that_opens_on_a_failure_is_troubleshooting() -> None:
    doc = split_document(
        "# T\n\n## Node stuck in maintenance mode\n\nIf the node does not come back, reset it:\n\n"
        "```bash\nqm reset 1100\n```\n\n## Start\n\nNow start it:\n\n```bash\nqm start 1100\n```\n"
    )
    assert [c.kind for c in doc.code] == [TROUBLESHOOTING, PROCEDURE]


# -- commands in paragraphs

PROSE = """# Make a VM

Check the template first: run `pvesh get /nodes/pve01/qemu/101/config` and look at it.

pvesh create /nodes/pve01/qemu/101/clone --newid 1150

Then resize it:
$ qm resize 1150 scsi0 +8G

Never run `qm destroy 1150` here. The `qm` tool has many subcommands, like `qm list`.
"""


def test_commands_in_paragraphs_are_found_and_each_finding_is_said() -> None:
    doc = split_document(PROSE)
    assert [(c.text, c.line, c.found) for c in doc.code] == [
        ("pvesh get /nodes/pve01/qemu/101/config\n", 3, "inline"),
        ("pvesh create /nodes/pve01/qemu/101/clone --newid 1150\n", 5, "line"),
        ("qm resize 1150 scsi0 +8G\n", 8, "prompt"),
    ]
    assert doc.notes == [
        "line 3: command found in a paragraph: pvesh get /nodes/pve01/qemu/101/config",
        "line 5: command found in a paragraph: pvesh create /nodes/pve01/qemu/101/clone --newid 1150",
        "line 8: command found in a paragraph after a $ prompt: qm resize 1150 scsi0 +8G",
        "line 10: 'qm destroy 1150' in a paragraph not taken as a command: the text warns against running it",
        "line 10: 'qm list' in a paragraph not taken as a command: the text mentions it without saying to run it",
    ]
    prose = "".join(b.text for b in doc.blocks if isinstance(b, Prose))
    assert "run `pvesh get" in prose  # inline code stays in its sentence
    assert "pvesh create" not in prose and "$ qm resize" not in prose  # a command line is replaced by its step


def test_commands_a_sentence_gives_as_examples_are_not_steps() -> None:
    text = (
        "# T\n\nFor example, to see the containers, run `talosctl containers`, or `talosctl containers -k` for\n"
        "the k8s.io namespace. To view a log, use `talosctl logs kubelet` or `talosctl logs -k etcd`.\n"
    )
    doc = split_document(text)
    assert doc.code == []  # "use `a` or `b`": either will do, so neither is a step
    assert (
        "line 3: 'talosctl containers' in a paragraph not taken as a command: the text gives it as an example"
        in doc.notes
    )
    assert any("'talosctl logs -k etcd'" in n and "example" in n for n in doc.notes)
    assert any("'talosctl logs kubelet'" in n and "example" in n for n in doc.notes)


def test_a_prompt_drawn_by_a_zsh_theme_is_a_prompt() -> None:
    doc = split_document(
        "# T\n\n```\n❯ talosctl disks -n 10.1.0.20\nNODE  DEV  MODEL\n10.1.0.20  /dev/sda  QEMU\n```\n"
    )
    assert [(c.text, c.dropped_output) for c in doc.code] == [("talosctl disks -n 10.1.0.20\n", 2)]


def test_prose_lines_that_start_like_a_command_word_are_not_commands() -> None:
    doc = split_document("# T\n\nThe test\nVM boots fast.\n\nssh into the node and look around.\n\ncat the file.\n")
    assert doc.code == []


def test_paragraphs_of_sections_that_do_not_run_are_not_read_for_commands() -> None:
    doc = split_document("# T\n\n## Troubleshooting\n\nRun `qm reset 1100` when it hangs.\n")
    assert doc.code == [] and doc.notes == []


def test_a_fence_listing_endpoints_is_prose_whatever_its_language() -> None:
    doc = split_document("# T\n\n```bash\nGET /nodes/{node}/qemu\n  Parameters:\n    node (string)\n```\n")
    assert doc.code == []
    assert "```text\nGET /nodes/{node}/qemu" in doc.blocks[-1].text
    assert doc.notes == [
        "line 3: a code block of endpoint lines and parameters kept as prose: it documents calls, it does not make them"
    ]
    assert is_listing("GET /version\n") and not is_listing("curl https://h/api2/json/version\n")


def test_a_page_whose_code_is_mostly_endpoints_is_a_reference() -> None:
    listing = "\n".join(f"GET /nodes/{{node}}/x{i}\n  Parameters:\n    node (string, required)" for i in range(6))
    kind = page_kind([listing, "curl https://h/api2/json/nodes\n"])
    assert kind.reference and (kind.endpoints, kind.parameters, kind.commands) == (6, 12, 1)
    assert not page_kind(["qm start 1100\nqm status 1100\n", "GET /nodes\n"]).reference


@pytest.mark.parametrize(
    ("command", "reads"),
    [
        ("qm list", True),
        ("qm config 1031 | grep scsi0", True),
        ("ssh root@pve01 qm status 1031", True),
        ("talosctl --nodes 10.20.0.31 version", True),
        ("talosctl -n 10.20.0.31 dashboard", True),  # interactive: quoted as prose, never run
        ("talosctl logs -f kubelet", True),  # interactive too: it never ends
        ("qm resize 1031 scsi0 +8G", False),
        ("pvesh get /nodes && qm start 1100", False),
        ("cat /etc/pve/storage.cfg > /tmp/x", False),
    ],
)
def test_only_reading_commands_count_as_checks(command: str, reads: bool) -> None:
    """A check section's command runs only when the effects table reads it as a read (pipeline.only_reads)."""
    drafts = Classifier().block(Code(command + "\n", "bash", 1, "Verify"))
    assert drafts and all(only_reads(d) for d in drafts) is reads
    if "dashboard" in command or " -f " in command:
        assert [d.kind for d in drafts] == ["prose"]


# -- plain text and its prompts

ROOT_PROMPTS = """Disk notes
==========

# Notes for the lab

# qm list
      VMID NAME       STATUS
      1031 stg-cp01   running

Then:

# qm resize 1031 scsi0 +8G
  Logical volume pve/vm-1031-disk-0 successfully resized.
"""


def test_a_root_prompt_is_a_command_and_the_lines_after_it_are_output() -> None:
    title, markdown, notes = text_to_markdown(ROOT_PROMPTS)
    assert title == "Disk notes" and "====" not in markdown
    assert "# Notes for the lab" in markdown  # not a command: stays text
    assert "```console\n$ qm list\n      VMID NAME" in markdown
    assert notes == ["'# qm list' is a command after a root prompt, not a heading (and 1 more like it)"]
    doc = split_document(markdown, title)
    assert [c.text for c in doc.code] == ["qm list\n", "qm resize 1031 scsi0 +8G\n"]
    assert [c.dropped_output for c in doc.code] == [2, 1]


def test_a_root_prompt_does_not_make_a_text_page_markdown() -> None:
    assert _format(ROOT_PROMPTS, None, ".txt") == "text"
    assert _format("Notes\n\n# qm list\n", "text/plain", "") == "text"
    assert _format("# Title\n\nWords.\n", "text/plain", "") == "markdown"


# -- HTML main content

PAGE = """<html><head><title>Guide</title></head><body>
<header><nav><a href="/">Home</a></nav></header>
<aside class="sidebar"><pre><code class="language-bash">qm destroy 1033</code></pre></aside>
<main><article><h1>Snapshot a VM before an upgrade</h1>
<p>This guide shows how to take a snapshot of a virtual machine before an upgrade of its system.</p>
<p>Take the snapshot with the API shell on the node that runs the machine:</p>
<pre><code class="language-bash">pvesh create /nodes/pve01/qemu/1031/snapshot --snapname before</code></pre>
<p>The snapshot takes a few seconds, and the machine keeps running while it is taken.</p>
<div class="share-buttons">Share this on social media</div>
</article>
<section id="comments"><p>Great post, I always run this one instead of a snapshot:</p>
<pre><code>qm stop 1032 &amp;&amp; qm destroy 1032</code></pre></section></main>
<footer>Copyright</footer></body></html>"""


def test_html_keeps_the_main_content_only_and_says_what_it_left_out() -> None:
    title, markdown, notes = html_to_markdown(PAGE)
    assert title == "Guide"
    assert "pvesh create /nodes/pve01/qemu/1031/snapshot" in markdown
    for furniture in ("qm destroy", "Home", "Great post", "Share this", "Copyright"):
        assert furniture not in markdown
    assert notes == [
        "HTML: took the page's main content, <article> (as trafilatura reads it)",
        "HTML: left out navigation, sidebars, header, footer and reader comments, with 2 code block(s) in them: "
        "they are not part of the procedure",
    ]


def test_a_page_too_short_for_trafilatura_falls_back_to_its_main_element() -> None:
    _, markdown, notes = html_to_markdown(
        "<body><nav>menu</nav><main><h1>H</h1><pre><code>qm list</code></pre></main></body>"
    )
    assert markdown == "# H\n\n```\nqm list\n```\n"
    assert notes == ["HTML: took the page's main content, <main> (trafilatura found no main text)"]


# -- what the pipeline makes of it


@pytest.fixture
def home(make_home: Callable[..., Home]) -> Home:
    return make_home(runbooks=False)


def _propose(home: Home, text: str, fmt: str = "markdown"):  # type: ignore[no-untyped-def]
    return propose(home, load_config(home), Source("page.md", text, fmt), "page")


def test_only_the_procedure_runs_and_the_rest_is_said_to_stay_prose(home: Home) -> None:
    proposal = _propose(
        home,
        "# Start a VM\n\n## Prerequisites\n\n```bash\nqm config 1100\nqm set 1100 --cores 2\n```\n\n"
        "## Steps\n\n```bash\nqm start 1100\n```\n\n## Troubleshooting\n\n```bash\nqm reset 1100\n```\n\n"
        "## Quick reference\n\n```bash\nqm stop 1100\n```\n",
    )
    assert proposal.steps == 1
    assert "```bash\nqm reset 1100\n```" in proposal.text and "```bash\nqm stop 1100\n```" in proposal.text
    assert (
        "line 5: a command in section 'Prerequisites' that changes something kept as prose: a prerequisites "
        "section runs only checks that read" in proposal.changes
    )
    assert (
        "section 'Troubleshooting' (line 16) kept as prose: troubleshooting is not run in sequence, only when "
        "something went wrong" in proposal.changes
    )
    assert any(c.startswith("section 'Quick reference' (line 22) kept as prose") for c in proposal.changes)


def test_read_only_checks_of_prerequisites_become_steps(home: Home) -> None:
    proposal = _propose(
        home, "# T\n\n## Prerequisites\n\n```bash\nqm config 1100\n```\n\n## Do\n\n```bash\nqm start 1100\n```\n"
    )
    assert proposal.steps == 2


def test_a_reference_page_proposes_at_most_three_reads(home: Home) -> None:
    listing = "\n".join(f"GET /nodes/{{node}}/x{i}\n  Parameters:\n    node (string, required)" for i in range(6))
    curls = "\n".join(f"curl -s https://pve01:8006/api2/json/{p}" for p in ("nodes", "version", "cluster/status"))
    page = (
        f"# API\n\n```bash\n{listing}\n```\n\n```bash\n{curls}\ncurl -s https://pve01:8006/api2/json/cluster/nextid\n"
        "curl -s -X POST https://pve01:8006/api2/json/nodes/pve01/qemu/1100/status/stop\n```\n"
    )
    proposal = _propose(home, page)
    assert proposal.steps == 3
    assert proposal.changes[:2] == [
        "line 3: a code block of endpoint lines and parameters kept as prose: it documents calls, it does not make them",
        "the page is a reference, not a procedure: its code blocks hold 6 endpoint lines and 12 parameter lines "
        "against 5 command lines",
    ]
    assert "status/stop" in proposal.text  # the example is shown, not run
    assert "POST" not in proposal.text.split("```api")[-1]


def test_a_reference_page_without_reads_says_so(home: Home) -> None:
    listing = "\n".join(f"POST /nodes/{{node}}/x{i}\n  Parameters:\n    node (string, required)" for i in range(6))
    with pytest.raises(IngestError, match="is a reference, not a procedure.*none of its examples is a read"):
        _propose(
            home, f"# API\n\n```bash\n{listing}\ncurl -X DELETE https://h:8006/api2/json/nodes/pve01/qemu/1100\n```\n"
        )


def test_a_plain_text_page_with_root_prompts_ingests(home: Home) -> None:
    proposal = propose(home, load_config(home), Source("notes.txt", ROOT_PROMPTS, "text"), "notes")
    assert proposal.steps == 2
    assert "successfully resized" not in proposal.text and "VMID NAME" not in proposal.text
    assert proposal.changes[0] == "'# qm list' is a command after a root prompt, not a heading (and 1 more like it)"


def test_a_login_in_prose_is_not_a_command() -> None:
    doc = split_document("# T\n\nLog in with `ssh root@pve01` and then run `qm list`.\n\n$ ssh -p 22 root@pve01\n")
    assert [c.text for c in doc.code] == ["qm list\n"]
    assert doc.notes == [
        "line 3: 'ssh root@pve01' not taken as a command: it opens a login session",
        "line 3: command found in a paragraph: qm list",
        "line 5: 'ssh -p 22 root@pve01' not taken as a command: it opens a login session",
    ]


def test_inside_an_article_the_whole_article_is_kept_even_where_trafilatura_read_less() -> None:
    para = "<p>" + "A sentence about snapshots that the author repeats on purpose here. " * 3 + "</p>"
    body = "".join(f"<div class='part{i}'><div>{para}</div></div>" for i in range(100))
    html = f"<body><main><article><h1>T</h1>{body}<pre><code class='language-bash'>qm list</code></pre></article></main></body>"
    _, markdown, notes = html_to_markdown(html)
    assert "qm list" in markdown and markdown.count("repeats on purpose") == 300
    assert notes[0].startswith(
        ("HTML: took the page's main content, <article>", "HTML: took the page's main content, <main>")
    )


def test_a_page_without_article_markup_is_cut_to_what_trafilatura_reads() -> None:
    html = (
        "<body><div id='content'><h1>Proxmox VE API</h1><div class='text'>"
        "<p>The API uses a REST like interface and JSON as its data format, over HTTPS on port 8006.</p>"
        "<p>List the nodes of the cluster with the token you made before, like this:</p>"
        "<pre>pvesh get /nodes</pre><p>The answer lists every node with its status and its load.</p></div></div>"
        "<div id='mw-navigation'><div id='mw-panel'><h3>Navigation</h3><pre>pvesh get /version</pre></div></div>"
        "<div id='footer'>Privacy policy</div></body>"
    )
    _, markdown, notes = html_to_markdown(html)
    assert "pvesh get /nodes" in markdown and "/version" not in markdown and "Privacy" not in markdown
    assert notes[0] == 'HTML: took the page\'s main content, <div class="text"> (as trafilatura reads it)'


def test_a_page_whose_commands_are_all_troubleshooting_says_why_nothing_runs(home: Home) -> None:
    with pytest.raises(IngestError, match=r"no command that can become a step; section 'Troubleshooting' \(line 3\)"):
        _propose(home, "# T\n\n## Troubleshooting\n\n```bash\nqm reset 1100\n```\n")


def test_a_block_a_paragraph_introduces_as_an_example_is_prose(home: Home) -> None:
    page = (
        "# Get the image\n\n## Download\n\n```bash\ncurl -L -o /tmp/talos.iso https://factory.talos.dev/image/<schematic>/v1.9.5/metal-amd64.iso\n```\n\n"
        "For example, with the default schematic:\n\n```bash\ncurl -L -o /tmp/talos.iso https://factory.talos.dev/image/376567/v1.9.5/metal-amd64.iso\n```\n"
    )
    proposal = _propose(home, page)
    assert proposal.steps == 1 and "{{ schematic }}" in proposal.text
    assert any("'For example ...' kept as prose" in c for c in proposal.changes)
