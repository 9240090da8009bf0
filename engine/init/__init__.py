"""Making and keeping an operator's home: ``runbook init`` (from the package, or from a live cluster),
the shipped library's manifest (``runbook library``), and first profiles (``runbook profiles new``)."""
