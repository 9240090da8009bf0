"""Executors: turn rendered actions into results, one module per kind of action."""
