"""The full crash sweep: kill ``cluster-create`` after every journal record, and at many seeded moments.

Not part of the test suite, which runs a subset (docs/reliability.md, "The crash harness"). Run it by
hand, from the repository::

    .venv/bin/python bench/crash.py                 # every record of both profiles, then 40 seeds
    .venv/bin/python bench/crash.py --seeds 200     # the long sweep of seeded moments too
    .venv/bin/python bench/crash.py --seeds 0       # only the kills at journal records

Each case is a fresh simulated cluster in a process of its own; the run is SIGKILLed, then resumed
once (records) or as the seed says (moments), and the cluster, the effects and the journal must be
those of a clean run. The summary of every kill (where it landed, whether it converged) is written
to ``.pytest_cache/crash-sweep-records.json`` and ``crash-sweep-seeds.json``, and counted here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUMMARIES = REPO / ".pytest_cache"


def sweep(name: str, selection: str, env: dict[str, str]) -> tuple[int, list[dict]]:
    """Run the crash tests ``selection`` picks with ``env``: pytest's exit code, and the summary of each sequence."""
    summary = SUMMARIES / f"crash-sweep-{name}.json"
    summary.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "tests/test_crash_resume.py", "-q", "-k", selection]
    code = subprocess.call(command, cwd=REPO, env={**os.environ, **env, "RUNBOOK_CRASH_SUMMARY": str(summary)})
    return code, json.loads(summary.read_text()) if summary.exists() else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeded-moment sequences (default 40; 0: none)")
    parser.add_argument("--no-records", action="store_true", help="skip the kills after every journal record")
    options = parser.parse_args()
    SUMMARIES.mkdir(exist_ok=True)
    codes, cases = [], []
    started = time.monotonic()
    if not options.no_records:
        code, done = sweep("records", "after_any_journal_record", {"RUNBOOK_CRASH_RECORDS": "all"})
        codes.append(code)
        cases += done
    if options.seeds:
        seeds = {"RUNBOOK_CRASH_SEEDS": str(options.seeds), "RUNBOOK_CRASH_CLONE_SECS": "30"}
        code, done = sweep("seeds", "converge_to_a_clean_run", seeds)
        codes.append(code)
        cases += done
    took = time.monotonic() - started
    kills = [kill for case in cases for kill in case["kills"]]
    points = Counter(kill["point"] for kill in kills)
    print(
        f"\n{len(cases)} sequences, {len(kills)} kills at {len(points)} distinct crash points, in {took / 60:.1f} min"
    )
    print(f"converged: {sum(1 for case in cases if case['converged'])} of {len(cases)}")
    print(f"resumes that reclaimed a dead run's lock: {sum(case['reclaimed'] for case in cases)}")
    for point, count in sorted(points.items(), key=lambda item: -item[1])[:15]:
        print(f"  {count:4d}  {point}")
    return max(codes, default=0)


if __name__ == "__main__":
    raise SystemExit(main())
