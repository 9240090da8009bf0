"""Runs on Temporal (docs/temporal.md): a run is a workflow, each step of each item an activity.

Nothing outside this package imports it unless ``--temporal`` or ``execution.temporal`` asks for
it, so a local run never needs ``temporalio`` (the ``temporal`` extra).
"""
