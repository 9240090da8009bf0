"""``runbook ingest``: turn a procedure written for people (a web page, a markdown or text file)
into a runbook that follows this cluster's conventions, and record who reviewed it.

One module per stage, each a pure function where it can be:

    fetch -> convert (HTML to markdown) -> redact (credentials out, first) -> extract (prose and
    code blocks) -> commands (shell words) -> classify (steps) -> adapt (cluster conventions)
    -> compose (runbook text) -> check (the validator every runbook passes)

``pipeline.propose`` runs them in that order; ``trust`` records reviews. See docs/ingest.md.
"""
