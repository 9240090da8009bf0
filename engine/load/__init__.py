"""Loading the inputs: the home, cluster-config.yaml, profiles and their placement plan, YAML with
positions, and the schemas every document is checked against. Imports nothing of run/ or report/."""
