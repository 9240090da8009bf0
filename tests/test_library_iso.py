"""The iso-upload runbook (issue 17, op. 40), run end to end against the simulated cluster through the
CLI, the nodes' files and the storages' content checked after each run; and the simulated node
commands it needs (``sha256sum``/``sha512sum``, ``mv``), through the simulated shell's executor.

A download's simulated content is ``download_content(URL)``, so the checksum a test gives is worked
out from the URL as an operator copies it from a distribution's SHA256SUMS.
"""

from __future__ import annotations

import hashlib

import pytest

from engine.runbook.actions import ShellCommand, StepFailed
from engine.sim.nodefiles import NodeFiles, download_content
from engine.sim.shell import SimShellExecutor
from tests.test_library_storage import failed
from tests.test_runbooks_simulated import SCENARIOS, Sim, sim  # noqa: F401  (the fixture)
from tests.test_sim_tools import FakeVms

URL = "https://cdimage.example.org/debian-12.9.0-amd64-netinst.iso"
ISO_DIR = "/var/lib/vz/template/iso"
SHA256 = hashlib.sha256(download_content(URL)).hexdigest()
SHA512 = hashlib.sha512(download_content(URL)).hexdigest()


def iso_files(scenario: Sim) -> dict[str, list[str]]:
    """The files in the ISO folder of each node that has any."""
    found = {
        node: sorted(path for path in paths if path.startswith(ISO_DIR + "/"))
        for node, paths in scenario.state()["files"].items()
    }
    return {node: paths for node, paths in found.items() if paths}


def listed(scenario: Sim, node: str) -> list[str]:
    """The volids iso-list shows for ``local`` on ``node``."""
    rows = scenario.run("iso-list", "storage=local").output(f"isos[name=storage/{node}/local]")
    return [row["volid"] for row in rows]


# -- the runbook ---------------------------------------------------------------------------------------


def test_iso_fetched_verified_and_listed_on_that_node_only_then_left_alone(sim: Sim) -> None:  # noqa: F811
    uploaded = sim.run("iso-upload", f"url={URL}", "node=pve02", f"checksum={SHA256.upper()}")
    volid = "local:iso/debian-12.9.0-amd64-netinst.iso"
    assert uploaded.status("upload") == "succeeded"
    assert uploaded.output("iso") == {"volid": volid, "node": "pve02", "size": "50 MiB", "checksum": "matches"}
    assert iso_files(sim) == {"pve02": [f"{ISO_DIR}/debian-12.9.0-amd64-netinst.iso"]}, "no .part file is left"
    record = sim.state()["files"]["pve02"][f"{ISO_DIR}/debian-12.9.0-amd64-netinst.iso"]
    assert record["source"] == URL
    assert listed(sim, "pve02") == [volid] and listed(sim, "pve01") == [] and listed(sim, "pve03") == []

    again = sim.run("iso-upload", f"url={URL}", "node=pve02", f"checksum={SHA512}")
    assert again.status("existing_digest") == "succeeded", "the image there is checked against the checksum"
    assert again.status("upload") == "skipped" and again.output("iso")["volid"] == volid
    assert sim.state()["files"]["pve02"][f"{ISO_DIR}/debian-12.9.0-amd64-netinst.iso"] == record, "left alone"
    plain = sim.run("iso-upload", f"url={URL}", "node=pve02")
    assert plain.status("existing_digest") == "skipped" and plain.status("upload") == "skipped"
    assert plain.output("iso")["checksum"] is None
    assert set(SCENARIOS["iso_upload"]) <= set(sim.ran)


def test_a_checksum_mismatch_keeps_nothing(sim: Sim) -> None:  # noqa: F811
    wrong = "ab" * 64
    said = failed(sim, "iso-upload", f"url={URL}", "node=pve03", f"checksum={wrong}")
    assert "step 'upload' failed" in said
    assert "sha512sum: WARNING: 1 computed checksum did NOT match" in said
    assert "the downloaded file does not match the checksum given: it was removed and nothing was kept" in said
    assert iso_files(sim) == {}, "neither the .part file nor the image is kept"
    assert listed(sim, "pve03") == []


def test_an_image_there_that_does_not_match_is_left_as_it_is(sim: Sim) -> None:  # noqa: F811
    sim.run("iso-upload", f"url={URL}", "node=pve01", "filename=installer.iso")
    other = hashlib.sha256(b"another image").hexdigest()
    said = failed(sim, "iso-upload", f"url={URL}", "node=pve01", "filename=installer.iso", f"checksum={other}")
    assert (
        f"local:iso/installer.iso is already on pve01 but does not match the checksum given (its digest: {SHA256}): "
        "it is left as it is; delete it first to fetch it again, or give another filename"
    ) in said
    assert iso_files(sim) == {"pve01": [f"{ISO_DIR}/installer.iso"]}


def test_the_name_the_storage_and_the_node_are_checked_before_anything_is_fetched(sim: Sim) -> None:  # noqa: F811
    assert (
        "the file name download, the last part of the URL, is not a name PVE lists as an ISO image "
        "(NAME.iso or NAME.img): give filename=NAME.iso"
    ) in failed(sim, "iso-upload", "url=https://mirror.example.org/download?file=debian.iso", "node=pve01")
    named = sim.run(
        "iso-upload", "url=https://mirror.example.org/download?file=debian.iso", "node=pve01", "filename=debian.img"
    )
    assert named.output("iso")["volid"] == "local:iso/debian.img"
    assert "storage local-lvm does not take ISO images (its content: images,rootdir): iso-list shows" in failed(
        sim, "iso-upload", f"url={URL}", "node=pve01", "storage=local-lvm"
    )
    assert "node pve07 is not an online node of the cluster (online: pve01, pve02, pve03)" in failed(
        sim, "iso-upload", f"url={URL}", "node=pve07"
    )
    assert "checksum" in failed(sim, "iso-upload", f"url={URL}", "node=pve01", "checksum=1234")
    assert iso_files(sim) == {"pve01": [f"{ISO_DIR}/debian.img"]}


def test_a_review_shows_the_download_and_a_second_one_nothing(sim: Sim) -> None:  # noqa: F811
    review = sim.invoke(
        "run", "iso-upload", "--simulate", "--dry-run", "--param", f"url={URL}", "--param", "node=pve02"
    )
    assert review.exit_code == 0, review.output
    assert f"> download file pve02:{ISO_DIR}/debian-12.9.0-amd64-netinst.iso" in review.output
    assert iso_files(sim) == {}, "a dry-run fetches nothing"
    sim.run("iso-upload", f"url={URL}", "node=pve02")
    again = sim.invoke("run", "iso-upload", "--simulate", "--dry-run", "--param", f"url={URL}", "--param", "node=pve02")
    assert again.exit_code == 0 and "Plan: 0 to create, 0 to change, 0 to destroy." in again.output


# -- the simulated node commands -----------------------------------------------------------------------


@pytest.fixture
def shell() -> tuple[SimShellExecutor, NodeFiles]:
    files = NodeFiles()
    return SimShellExecutor(FakeVms(), files), files


def ssh(executor: SimShellExecutor, script: str) -> dict:
    return executor.execute(ShellCommand(script=script, node="pve01")).data


def test_digests_of_downloads_files_and_stdin(shell) -> None:
    executor, files = shell
    ssh(executor, f"wget -q -O /root/a.iso {URL}")
    files.put("pve01", "/root/patch.yaml", 4, source="file step", text="a: 1")
    out = ssh(executor, "sha256sum /root/a.iso /root/patch.yaml; echo hello | sha512sum")
    assert out["stdout"] == (
        f"{SHA256}  /root/a.iso\n"
        f"{hashlib.sha256(b'a: 1').hexdigest()}  /root/patch.yaml\n"
        f"{hashlib.sha512(b'hello' + chr(10).encode()).hexdigest()}  -\n"
    )
    with pytest.raises(StepFailed) as missing:
        ssh(executor, "sha256sum /root/nothing.iso")
    assert "sha256sum: /root/nothing.iso: No such file or directory" in missing.value.message
    files.put("pve01", "/root/secret.yaml", 9, source="file step", sha256="0" * 64)
    with pytest.raises(StepFailed) as secret:
        ssh(executor, "sha512sum /root/secret.yaml")
    assert "the content of /root/secret.yaml, a secret file, is not kept" in secret.value.message


def test_check_says_ok_or_failed_as_coreutils_does(shell) -> None:
    executor, _files = shell
    ssh(executor, f"wget -q -O /root/a.iso {URL}")
    ok = ssh(executor, f"echo '{SHA256}  /root/a.iso' | sha256sum --check")
    assert ok["stdout"] == "/root/a.iso: OK\n" and ok["exit_code"] == 0
    quiet = ssh(executor, f"echo '{SHA512}  /root/a.iso' | sha512sum -c --quiet")
    assert quiet["stdout"] == ""
    bad = ssh(executor, f"echo '{'0' * 64}  /root/a.iso' | sha256sum --check || echo stopped")
    assert bad["stdout"] == "/root/a.iso: FAILED\nstopped\n"
    assert bad["stderr"] == "sha256sum: WARNING: 1 computed checksum did NOT match\n"
    status = ssh(executor, f"echo '{'0' * 64}  /root/a.iso' | sha256sum --check --status || echo stopped")
    assert status["stdout"] == "stopped\n" and status["stderr"] == ""
    empty = ssh(executor, "echo nonsense | sha256sum -c || true")
    assert "no properly formatted checksum lines found" in empty["stderr"]


def test_mv_renames_files_and_folders(shell) -> None:
    executor, files = shell
    ssh(executor, f"wget -q -O /root/.a.iso.part {URL}; mv /root/.a.iso.part {ISO_DIR}/a.iso")
    assert files.get("pve01", "/root/.a.iso.part") is None
    assert files.get("pve01", f"{ISO_DIR}/a.iso") == {"type": "file", "size": 50 * 1024 * 1024, "source": URL}
    ssh(executor, f"mkdir -p /root/work/sub; mv {ISO_DIR}/a.iso /root/work/sub; mv -v /root/work /root/done")
    assert files.get("pve01", "/root/done/sub/a.iso") is not None and not files.exists("pve01", "/root/work")
    ssh(executor, f"wget -q -O /root/b.iso {URL}; echo x > /root/c.iso; mv -n /root/b.iso /root/c.iso")
    assert files.get("pve01", "/root/c.iso")["source"] == "shell redirection", "-n keeps the file there"
    ssh(executor, "mv -f /root/b.iso /root/c.iso")
    assert files.get("pve01", "/root/c.iso")["source"] == URL and not files.exists("pve01", "/root/b.iso")
    for script, said in (
        ("mv /root/none.iso /root/x.iso", "mv: cannot stat '/root/none.iso': No such file or directory"),
        ("mv /root/c.iso /nowhere/x.iso", "mv: cannot move '/root/c.iso' to '/nowhere/x.iso': No such file"),
        ("mv /root/c.iso /root/done", ""),
        ("mv /root/done /root/done/sub", "mv: cannot move '/root/done' to a subdirectory of itself"),
        ("mv /root/c.iso", "mv: missing destination file operand after '/root/c.iso'"),
        ("mv /var/lib/vz /root/vz", "(simulation: a system file or folder)"),
    ):
        if not said:
            ssh(executor, script)
            continue
        with pytest.raises(StepFailed) as refused:
            ssh(executor, script)
        assert said in refused.value.message, script
    assert files.get("pve01", "/root/done/c.iso") is not None, "moved into the folder"
