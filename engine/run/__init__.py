"""Running: the session's checked inputs, the facts read from the cluster, the step loop and its
scheduling, dispatch to executors, gates, retries, the journal and the run lock."""
