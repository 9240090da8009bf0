"""The runbook language: parsing markdown into steps, rendering them with Jinja, checking the
rendered steps, and validating a whole home. Pure: no cluster, no files written."""
