"""``runbook init --from``: read the cluster, write a config that validates, and an example profile
that fits it. The texts are checked with ``runbook validate``'s own rules before anything is written."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..load.config import config_problems
from ..load.problems import InputError, Problem
from ..load.yamlsource import load_yaml
from ..resources import data_path
from ..run.dispatch import Dispatcher
from . import configtext
from .discover import Discovery, discover
from .scaffold import EXAMPLE_PROFILE


@dataclass(frozen=True)
class Written:
    config: str
    profile: str
    discovery: Discovery

    @property
    def guessed(self) -> int:
        return self.config.count("GUESSED")


def from_cluster(
    dispatcher: Dispatcher, contacted_host: str | None, access: configtext.Access, *, simulated: bool = False
) -> Written:
    """The home's config and example profile for the cluster behind ``dispatcher``."""
    discovery = discover(dispatcher, contacted_host)
    text = configtext.render(discovery, access)
    if simulated:
        text = (
            "# Read from the SIMULATED cluster (--simulate): its nodes, storages and addresses are fictional.\n" + text
        )
    problems = config_problems(load_yaml(text, "cluster-config.yaml"))
    if problems:  # the template and the schema disagree: a bug here, never the operator's to fix
        raise InputError([*problems, Problem("cluster-config.yaml", None, None, "runbook init wrote this; report it")])
    return Written(text, example_profile(discovery), discovery)


def example_profile(discovery: Discovery) -> str:
    """The shipped example profile, its template and first VMIDs moved to fit the cluster's ranges."""
    text = (data_path() / "clusters" / EXAMPLE_PROFILE).read_text(encoding="utf-8")
    (t_low, t_high), (v_low, _), _ = configtext.vmid_ranges(discovery)
    in_range = [vm for vm in discovery.templates if t_low <= vm.vmid <= t_high]
    template = in_range[0].vmid if in_range else t_low
    note = f"  # {in_range[0].name}" if in_range else "  # no template on the cluster yet: make one, then set its VMID"
    text = re.sub(r"^template: \d+.*$", f"template: {template}{note}", text, flags=re.MULTILINE)
    shift = v_low - 1000
    return re.sub(r"^(\s+start_vmid: )(\d+)", lambda m: f"{m[1]}{int(m[2]) + shift}", text, flags=re.MULTILINE)
