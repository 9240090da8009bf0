"""Telling the operator: progress lines and JSON events, the dry-run plan as text and JSON, and
the HTML review of a plan or a run."""
