"""Simulated local tools: ``ansible-playbook``, ``flux`` and ``kubectl`` for ``local`` steps under ``--simulate``.

``local`` steps run for real on this machine in a simulation, with a folder of these shims first on
PATH. ``write_shims(bin_dir, state_file)`` writes one executable per tool; each runs with the
interpreter that wrote it (``#!`` is ``sys.executable``) and calls ``main(tool, state_file, argv)``.

The shims read the simulated cluster from the state file (its ``talos`` section, written by
``engine.sim.talos``) and never write it: the engine saves that file after every step, and would
overwrite anything a shim wrote during one. What they do is appended instead to ``tools.jsonl``
next to the state file, one JSON line per call (``calls(state_file)`` reads it back).

- ``ansible-playbook``: needs ``PROXMOX_API_TOKEN`` in its environment and refuses to run when any
  argument contains the token (or its secret part): the command line of every process is readable
  by every user. Prints a play recap; the playbook is not run (nothing of it is simulated).
- ``flux bootstrap git --url ... --branch ... --path ...`` and ``flux check [--pre]``: against the
  cluster the kubeconfig points at, which must be a bootstrapped simulated cluster.
- ``kubectl get nodes [-o wide|name|json]``, ``kubectl wait --for=condition=Ready nodes --all``,
  ``kubectl version``, ``kubectl cluster-info``: the simulated cluster's nodes.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

TOOLS = ("ansible-playbook", "flux", "kubectl")
CALLS_FILE = "tools.jsonl"
TOKEN_ENV = "PROXMOX_API_TOKEN"
_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the ``engine`` package


def write_shims(bin_dir: Path, state_file: Path) -> None:
    """Write the ``ansible-playbook``, ``flux`` and ``kubectl`` shims into ``bin_dir`` (created if needed)."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    state = str(Path(state_file).resolve())
    python = sys.executable
    for tool in TOOLS:
        body = (
            f"import sys\nsys.path.insert(0, {str(_ROOT)!r})\nfrom engine.sim.shims import main\n"
            f"sys.exit(main({tool!r}, {state!r}, sys.argv[1:]))\n"
        )
        if python and len(python) < 120 and not any(c.isspace() for c in python):
            text = f"#!{python}\n# runbook simulation: {tool} (written by engine/sim/shims.py)\n{body}"
        else:  # a #! line cannot hold this interpreter's path: let sh start it
            text = (
                f"#!/bin/sh\n# runbook simulation: {tool} (written by engine/sim/shims.py)\n"
                f'exec {shlex.quote(python or "python3")} -c {shlex.quote(body)} "$@"\n'
            )
        target = bin_dir / tool
        temp = bin_dir / f".{tool}.tmp"
        temp.write_text(text, encoding="utf-8")
        os.chmod(temp, 0o755)
        os.replace(temp, target)


def calls(state_file: Path) -> list[dict[str, Any]]:
    """Every call the shims recorded next to ``state_file``, oldest first."""
    path = Path(state_file).parent / CALLS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def main(tool: str, state_file: str, argv: list[str]) -> int:
    """One shim invocation; returns the exit code."""
    shim = _Shim(Path(state_file))
    handler = {"ansible-playbook": shim.ansible, "flux": shim.flux, "kubectl": shim.kubectl}[tool]
    try:
        return handler(list(argv))
    except BrokenPipeError:
        return 141


class _Shim:
    def __init__(self, state_file: Path):
        self.state_file = state_file

    # -- shared

    def record(self, **fields: Any) -> None:
        """Append one call record (one write on an O_APPEND descriptor: parallel calls never interleave)."""
        path = self.state_file.parent / CALLS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), "cwd": os.getcwd(), **fields}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def talos(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        talos = data.get("talos") if isinstance(data, dict) else None
        return talos if isinstance(talos, dict) else {}

    def cluster(self, kubeconfig: str | None, context: str | None) -> tuple[str, dict[str, Any]] | str:
        """(cluster id, cluster) the kubeconfig reaches, or the error text kubectl/flux would print."""
        import yaml  # only the kubernetes shims need it

        path = _kubeconfig_path(kubeconfig)
        if path is None:
            return (
                "The connection to the server localhost:8080 was refused - did you specify the right host or port?\n"
                "simulation: no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config); get one with "
                "talosctl kubeconfig\n"
            )
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            return f'error: error loading config file "{path}": {" ".join(str(exc).split())}\n'
        name = context or config.get("current-context")
        ctx = next((c.get("context") or {} for c in config.get("contexts") or [] if c.get("name") == name), None)
        if ctx is None:
            return (
                f'error: context "{name}" does not exist\n'
                if name
                else (
                    "The connection to the server localhost:8080 was refused - did you specify the right host or port?\n"
                )
            )
        entry = next(
            (c.get("cluster") or {} for c in config.get("clusters") or [] if c.get("name") == ctx.get("cluster")), {}
        )
        server = str(entry.get("server", "")).rstrip("/")
        host = server.split("://", 1)[-1]
        talos = self.talos()
        for cluster_id, cluster in (talos.get("clusters") or {}).items():
            if str(cluster.get("endpoint", "")).rstrip("/") != server:
                continue
            if not cluster.get("bootstrapped_on"):
                continue
            if entry.get("certificate-authority-data") != cluster.get("ca"):
                return (
                    "Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by "
                    "unknown authority\nsimulation: this kubeconfig is not from the simulated cluster "
                    f"{cluster.get('name')} (get a fresh one with talosctl kubeconfig)\n"
                )
            return cluster_id, cluster
        return (
            f"The connection to the server {host} was refused - did you specify the right host or port?\n"
            f"simulation: no bootstrapped simulated cluster answers at {server or '(no server)'}\n"
        )

    def nodes(self, cluster_id: str) -> list[tuple[str, dict[str, Any]]]:
        nodes = self.talos().get("nodes") or {}
        return sorted(
            ((ip, rec) for ip, rec in nodes.items() if rec.get("cluster_id") == cluster_id),
            key=lambda item: item[1].get("hostname", ""),
        )

    # -- ansible-playbook

    def ansible(self, argv: list[str]) -> int:
        token = os.environ.get(TOKEN_ENV, "")
        if token:
            secret = token.rpartition("=")[2]
            needles = [token] + ([secret] if len(secret) >= 8 else [])
            if any(needle in arg for arg in argv for needle in needles):
                sys.stderr.write(
                    f"ERROR! simulation: refusing to run: an argument contains the Proxmox API token. Pass it only "
                    f"in the environment ({TOKEN_ENV}): every user on this machine can read a command line.\n"
                )
                self.record(tool="ansible-playbook", refused="token in arguments", argc=len(argv))
                return 5
        value_options = {
            "-i",
            "--inventory",
            "-l",
            "--limit",
            "-t",
            "--tags",
            "--skip-tags",
            "-e",
            "--extra-vars",
            "-u",
            "--user",
            "-f",
            "--forks",
            "-c",
            "--connection",
            "--private-key",
            "--key-file",
            "--vault-password-file",
            "--vault-id",
            "-M",
            "--module-path",
            "--start-at-task",
            "-T",
            "--timeout",
            "--become-user",
            "--become-method",
        }
        playbooks: list[str] = []
        limit: list[str] = []
        options: dict[str, list[str]] = {}
        rest = list(argv)
        while rest:
            arg = rest.pop(0)
            name, eq, value = arg.partition("=")
            if arg in value_options or (eq and name in value_options):
                if not eq:
                    if not rest:
                        sys.stderr.write(f"ansible-playbook: error: argument {arg}: expected one argument\n")
                        return 2
                    value = rest.pop(0)
                options.setdefault(name, []).append(value)
                if name in ("-l", "--limit"):
                    limit += [v for v in value.split(",") if v]
            elif arg.startswith("-"):
                options.setdefault(arg, []).append("")
            else:
                playbooks.append(arg)
        if not playbooks:
            sys.stderr.write(
                "usage: ansible-playbook [-h] [--version] [-v] ... playbook [playbook ...]\n"
                "ansible-playbook: error: the following arguments are required: playbook\n"
            )
            return 2
        self.record(tool="ansible-playbook", argv=argv, token_in_env=bool(token))
        hosts = limit or ["localhost"]
        if not token:
            for playbook in playbooks:
                print(f"\nPLAY [{Path(playbook).stem} (simulated)] {'*' * 50}\n")
                print(f"TASK [Check the Proxmox API token] {'*' * 45}")
                for host in hosts:
                    print(
                        f'fatal: [{host}]: FAILED! => {{"changed": false, "msg": "{TOKEN_ENV} is not set: the '
                        f'playbook reads the Proxmox API token (user@realm!tokenid=secret) from the environment"}}'
                    )
            print(f"\nPLAY RECAP {'*' * 69}")
            for host in hosts:
                print(
                    f"{host:<26} : ok=0    changed=0    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0"
                )
            return 2
        for playbook in playbooks:
            print(f"\nPLAY [{Path(playbook).stem} (simulated)] {'*' * 50}\n")
            print(f"TASK [Gathering Facts] {'*' * 57}")
            for host in hosts:
                print(f"ok: [{host}]")
            print(f"\nTASK [simulation: the playbook's tasks are not run] {'*' * 28}")
            for host in hosts:
                print(f"skipping: [{host}]")
        print(f"\nPLAY RECAP {'*' * 69}")
        for host in hosts:
            print(
                f"{host:<26} : ok={len(playbooks)}    changed=0    unreachable=0    failed=0    "
                f"skipped={len(playbooks)}    rescued=0    ignored=0"
            )
        return 0

    # -- flux

    def flux(self, argv: list[str]) -> int:
        flags, positional = _split_flags(
            argv,
            {
                "--url",
                "--branch",
                "--path",
                "--private-key-file",
                "--kubeconfig",
                "--context",
                "--namespace",
                "-n",
                "--components-extra",
                "--username",
                "-u",
                "--password",
                "--author-name",
                "--author-email",
                "--timeout",
                "--interval",
                "--version",
                "-v",
                "--ssh-key-algorithm",
            },
        )
        if positional[:2] == ["bootstrap", "git"]:
            url = flags.get("--url")
            if not url:
                sys.stderr.write('✗ required flag(s) "url" not set\n')
                return 1
            found = self.cluster(flags.get("--kubeconfig"), flags.get("--context"))
            if isinstance(found, str):
                sys.stderr.write("✗ " + found)
                return 1
            cluster_id, cluster = found
            branch = flags.get("--branch") or "main"
            path = flags.get("--path") or "."
            self.record(
                tool="flux",
                action="bootstrap",
                cluster_id=cluster_id,
                cluster=cluster.get("name"),
                url=url,
                branch=branch,
                path=path,
            )
            print(
                f'► cloning branch "{branch}" from Git repository "{url}"\n✔ cloned repository\n'
                f"► generating component manifests\n✔ generated component manifests\n"
                f'✔ committed component manifests to "{branch}" (simulated)\n'
                f'► pushing component manifests to "{url}"\n► installing components in "flux-system" namespace\n'
                f"✔ installed components\n✔ reconciled components\n► generating sync manifests\n"
                f"✔ generated sync manifests\n► applying sync manifests\n✔ reconciled sync configuration\n"
                f'◎ waiting for GitRepository "flux-system/flux-system" to be reconciled\n'
                f"✔ GitRepository reconciled successfully\n"
                f'◎ waiting for Kustomization "flux-system/flux-system" to be reconciled\n'
                f"✔ Kustomization reconciled successfully\n► confirming components are healthy\n"
                f"✔ all components are healthy"
            )
            return 0
        if positional[:1] == ["check"]:
            found = self.cluster(flags.get("--kubeconfig"), flags.get("--context"))
            print("► checking prerequisites")
            if isinstance(found, str):
                sys.stderr.write("✗ " + found)
                return 1
            cluster_id, cluster = found
            print(f"✔ Kubernetes {str(cluster.get('kubernetes_version', '')).lstrip('v')} >=1.30.0-0")
            if "--pre" in flags:
                print("✔ prerequisites checks passed")
                return 0
            installed = any(
                c.get("tool") == "flux" and c.get("action") == "bootstrap" and c.get("cluster_id") == cluster_id
                for c in calls(self.state_file)
            )
            print("► checking version in cluster")
            if not installed:
                sys.stderr.write(
                    "✗ no controllers found in the 'flux-system' namespace with the label selector "
                    "'app.kubernetes.io/part-of=flux'\nsimulation: flux was not bootstrapped on this "
                    "simulated cluster\n"
                )
                return 1
            print("✔ distribution: flux-v2.4.0\n✔ bootstrapped: true\n► checking controllers")
            for controller in (
                "helm-controller",
                "kustomize-controller",
                "notification-controller",
                "source-controller",
            ):
                print(f"✔ {controller}: deployment ready")
            print("► checking crds\n✔ all checks passed")
            return 0
        shown = " ".join(positional[:2]) or "(no command)"
        sys.stderr.write(f"✗ simulation: flux {shown} is not simulated (simulated: bootstrap git, check)\n")
        return 1

    # -- kubectl

    def kubectl(self, argv: list[str]) -> int:
        flags, positional = _split_flags(
            argv,
            {
                "--kubeconfig",
                "--context",
                "-n",
                "--namespace",
                "-o",
                "--output",
                "--for",
                "--timeout",
                "--request-timeout",
                "-l",
                "--selector",
                "--cluster",
                "--user",
                "-s",
                "--server",
            },
        )
        simulated = "get nodes, wait --for=condition=Ready nodes, version, cluster-info"
        command = positional[:1]
        if command not in (["get"], ["wait"], ["version"], ["cluster-info"]):
            sys.stderr.write(
                f"error: simulation: kubectl {' '.join(positional[:2]) or '(no command)'} is not "
                f"simulated (simulated: {simulated})\n"
            )
            return 1
        if command == ["get"] and (len(positional) < 2 or positional[1] not in ("nodes", "node", "no")):
            sys.stderr.write(
                f"error: simulation: kubectl get {' '.join(positional[1:]) or ''} is not simulated "
                f"(simulated: {simulated})\n"
            )
            return 1
        found = self.cluster(flags.get("--kubeconfig"), flags.get("--context"))
        if command == ["version"] and isinstance(found, str):
            print("Client Version: v1.32.3\nKustomize Version: v5.5.0")
        if isinstance(found, str):
            sys.stderr.write(found)
            return 1
        cluster_id, cluster = found
        version = str(cluster.get("kubernetes_version", "v1.32.3"))
        nodes = self.nodes(cluster_id)
        if command == ["version"]:
            print(f"Client Version: v1.32.3\nKustomize Version: v5.5.0\nServer Version: {version}")
            return 0
        if command == ["cluster-info"]:
            print(
                f"Kubernetes control plane is running at {cluster.get('endpoint')}\n"
                f"CoreDNS is running at {cluster.get('endpoint')}/api/v1/namespaces/kube-system/services/"
                "kube-dns:dns/proxy"
            )
            return 0
        if command == ["wait"]:
            condition = flags.get("--for", "")
            targets = positional[1:]
            if condition.lower() != "condition=ready" or not targets or not targets[0].startswith(("node", "no")):
                sys.stderr.write(
                    f"error: simulation: kubectl wait {' '.join(argv)} is not simulated "
                    f"(simulated: wait --for=condition=Ready nodes --all | nodes/NAME)\n"
                )
                return 1
            names = [t.split("/", 1)[1] for t in targets if "/" in t]
            chosen = [(ip, rec) for ip, rec in nodes if not names or rec.get("hostname") in names]
            missing = [n for n in names if n not in {rec.get("hostname") for _, rec in nodes}]
            if missing:
                sys.stderr.write(f'Error from server (NotFound): nodes "{missing[0]}" not found\n')
                return 1
            if not chosen:
                sys.stderr.write("error: no matching resources found\n")
                return 1
            for _ip, rec in chosen:
                print(f"node/{rec.get('hostname')} condition met")
            return 0
        output = flags.get("-o") or flags.get("--output") or ""
        if output == "name":
            for _ip, rec in nodes:
                print(f"node/{rec.get('hostname')}")
            return 0
        if output == "json":
            print(
                json.dumps(
                    {
                        "apiVersion": "v1",
                        "kind": "List",
                        "items": [_node_json(ip, rec, version) for ip, rec in nodes],
                        "metadata": {"resourceVersion": ""},
                    },
                    indent=4,
                )
            )
            return 0
        if output not in ("", "wide"):
            sys.stderr.write(f"error: simulation: kubectl get nodes -o {output} is not simulated (wide, name, json)\n")
            return 1
        if not nodes:
            sys.stderr.write("No resources found\n")
            return 0
        header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        if output == "wide":
            header += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
        rows = [header]
        for ip, rec in nodes:
            row = [
                str(rec.get("hostname")),
                "Ready",
                "control-plane" if rec.get("role") == "controlplane" else "<none>",
                _age(rec.get("installed_at")),
                version,
            ]
            if output == "wide":
                row += [ip, "<none>", f"Talos ({rec.get('talos_version')})", "6.12.18-talos", "containerd://2.0.3"]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for row in rows:
            print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        return 0


def _split_flags(argv: list[str], value_flags: set[str]) -> tuple[dict[str, str], list[str]]:
    """(flags, positional): ``--x=v``, ``--x v`` for flags that take a value, bare flags as ``""``."""
    flags: dict[str, str] = {}
    positional: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            positional += rest
            break
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if not eq and name in value_flags and rest:
                value = rest.pop(0)
            flags[name] = value
        else:
            positional.append(arg)
    return flags, positional


def _kubeconfig_path(flag: str | None) -> Path | None:
    candidates = [flag] if flag else [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not candidates:
        candidates = [str(Path.home() / ".kube" / "config")]
    for candidate in candidates:
        path = Path(os.path.expanduser(candidate))
        if path.is_file():
            return path
    return None


def _age(installed_at: Any) -> str:
    if not isinstance(installed_at, (int, float)):
        return "<unknown>"
    seconds = max(0, int(time.time() - installed_at))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _node_json(ip: str, rec: dict[str, Any], version: str) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": rec.get("hostname"), "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    if rec.get("role") == "controlplane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": rec.get("hostname"), "labels": labels},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": rec.get("hostname")}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {
                "kubeletVersion": version,
                "osImage": f"Talos ({rec.get('talos_version')})",
                "containerRuntimeVersion": "containerd://2.0.3",
                "architecture": "amd64",
            },
        },
    }
