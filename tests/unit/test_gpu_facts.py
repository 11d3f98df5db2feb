"""The toolkit.nvidia.gpu_facts module, parsing real nvidia-smi and PCI outputs (tests/fixtures/nvidia),
and the rules of its module_utils/nvidia_host.py that the roles and `toolkit doctor` share."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
NVIDIA = PROJECT / "tests" / "fixtures" / "nvidia"
COLLECTIONS = PROJECT / "collections"  # its ansible_collections joins the one pip's ansible installs
MODULE = COLLECTIONS / "ansible_collections" / "toolkit" / "nvidia" / "plugins" / "modules" / "gpu_facts.py"
sys.path[:0] = [str(MODULE.parent), str(COLLECTIONS)]

import gpu_facts as facts  # noqa: E402
from ansible_collections.toolkit.nvidia.plugins.filter.fabric_manager import FilterModule  # noqa: E402
from ansible_collections.toolkit.nvidia.plugins.module_utils import nvidia_host  # noqa: E402


def sysfs_from_lines(root: Path, lines: list[tuple[str, str, str, str]]) -> Path:
    for address, vendor, device, pci_class in lines:
        node = root / address
        node.mkdir(parents=True)
        (node / "vendor").write_text(vendor + "\n")
        (node / "device").write_text(device + "\n")
        (node / "class").write_text(pci_class + "\n")
    return root


def sysfs_from_capture(root: Path, name: str) -> Path:
    """A sysfs tree from the captured `address vendor device class` listing."""
    rows = [tuple(line.split()) for line in (NVIDIA / name).read_text().splitlines() if line.strip()]
    return sysfs_from_lines(root, rows)  # type: ignore[arg-type]


def sysfs_from_lspci(root: Path, name: str) -> Path:
    """A sysfs tree holding the devices an `lspci -Dnn` capture shows."""
    rows = []
    for line in (NVIDIA / name).read_text().splitlines():
        match = re.match(r"(\S+) .*\[([0-9a-f]{4})\]: .*\[([0-9a-f]{4}):([0-9a-f]{4})\]", line)
        if match:
            address, pci_class, vendor, device = match.groups()
            rows.append((address, f"0x{vendor}", f"0x{device}", f"0x{pci_class}00"))
    return sysfs_from_lines(root, rows)


def test_real_h100_vm_capture() -> None:
    query = facts.parse_query_xml((NVIDIA / "h100-x1-nvidia-smi-q-x.xml").read_text())
    assert query["driver_version"] == "580.159.04"
    assert query["cuda_version"] == "13.0"
    (gpu,) = query["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["architecture"] == "Hopper"
    assert gpu["uuid"] == "GPU-b41a11a2-5963-181a-a4a8-22bf7c6cdc0a"
    assert gpu["pci_bus_id"] == "00000000:00:06.0"
    assert gpu["memory_total_mib"] == 81559
    assert gpu["persistence_mode"] is True
    assert gpu["mig_mode"] == "Disabled"
    assert gpu["ecc_mode"] == "Enabled"
    assert gpu["ecc_uncorrectable_volatile"] == gpu["ecc_uncorrectable_aggregate"] == 0
    assert gpu["fabric_state"] == "N/A"


def test_real_h100_vm_topology_has_ansi_codes_and_no_nvlink() -> None:
    text = (NVIDIA / "h100-x1-topo-m.txt").read_text()
    assert "\x1b[4m" in text
    topology = facts.parse_topology(text)
    assert topology["gpus"] == ["GPU0"]
    assert topology["nvlink"] is False


def test_real_h100_vm_pci_bus_has_one_h100_and_no_nvswitch(tmp_path: Path) -> None:
    pci = facts.pci_inventory(str(sysfs_from_capture(tmp_path, "h100-x1-sys-bus-pci-devices.txt")))
    assert pci == {"gpus": 1, "nvswitches": 0, "gpu_device_ids": ["0x2330"]}


def test_h100_vm_summary_needs_no_fabric_manager(tmp_path: Path) -> None:
    summary = facts.gpu_facts(
        facts.parse_query_xml((NVIDIA / "h100-x1-nvidia-smi-q-x.xml").read_text()),
        facts.parse_topology((NVIDIA / "h100-x1-topo-m.txt").read_text()),
        facts.pci_inventory(str(sysfs_from_capture(tmp_path, "h100-x1-sys-bus-pci-devices.txt"))),
    )
    assert summary["gpu_count"] == 1
    assert summary["gpu_model"] == "NVIDIA H100 80GB HBM3"
    assert summary["persistence_mode"] is True
    assert summary["mig_enabled"] is False
    assert summary["nvswitch"] is False
    assert summary["fabric_state"] is None


def test_hgx_h100_eight_gpus_on_an_nvswitch_fabric(tmp_path: Path) -> None:
    query = facts.parse_query_xml((NVIDIA / "h100-hgx8-k8s-test-infra-nvidia-smi-q-x.xml").read_text())
    topology = facts.parse_topology((NVIDIA / "h100-hgx8-tpgds-aihub0007-topo-m.txt").read_text())
    pci = facts.pci_inventory(str(sysfs_from_lspci(tmp_path, "h100-hgx8-rhel94-host-lspci-Dnn-egrep.txt")))
    summary = facts.gpu_facts(query, topology, pci)
    assert summary["gpu_count"] == query["attached_gpus"] == 8
    assert len({gpu["uuid"] for gpu in summary["gpus"]}) == 8
    assert summary["driver_version"] == "580.105.08"
    assert summary["fabric_state"] == "Completed"
    assert summary["nvswitch"] is True
    assert summary["nvlink"] is True
    assert summary["nvlinks_per_pair"] == 18
    assert pci == {"gpus": 8, "nvswitches": 4, "gpu_device_ids": ["0x2330"]}


def test_hgx_topology_links_every_gpu_pair_with_nv18() -> None:
    topology = facts.parse_topology((NVIDIA / "h100-hgx8-tpgds-aihub0007-topo-m.txt").read_text())
    assert topology["gpus"] == [f"GPU{i}" for i in range(8)]
    assert all(set(row.values()) == {"NV18"} and len(row) == 7 for row in topology["links"].values())


def test_pcie_pair_with_nvlink_bridge_is_not_an_nvswitch_system() -> None:
    topology = facts.parse_topology((NVIDIA / "h100-pcie-x2-nvlink-hpe-dl380a-topo-m.txt").read_text())
    assert topology["links"] == {"GPU0": {"GPU1": "NV12"}, "GPU1": {"GPU0": "NV12"}}
    query = {"gpus": [], "driver_version": None, "cuda_version": None}
    summary = facts.gpu_facts(query, topology, {"gpus": 2, "nvswitches": 0, "gpu_device_ids": ["0x2331"]})
    assert summary["nvlink"] is True
    assert summary["nvswitch"] is False


def test_older_dtd_a100_parses() -> None:
    query = facts.parse_query_xml(
        (NVIDIA / "a100-sxm4-40gb-single-k8s-test-infra-nvidia-smi-q-x.xml").read_text()
    )
    assert query["driver_version"] == "570.148.08"
    assert [gpu["name"] for gpu in query["gpus"]] == ["NVIDIA A100-SXM4-40GB"]
    assert query["gpus"][0]["memory_total_mib"] == 40960


def test_mig_enabled_a100_is_reported() -> None:
    query = facts.parse_query_xml((NVIDIA / "a100-sxm4-x4-mig-telegraf-nvidia-smi-q-x.xml").read_text())
    summary = facts.gpu_facts(
        query, {"nvlink": False, "nvlinks_per_pair": 0}, facts.pci_inventory("/nonexistent")
    )
    assert summary["mig_enabled"] is True


def run_module(tmp_path: Path, args: dict[str, Any], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Execute the module as Ansible does: a process given its arguments file."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(COLLECTIONS), **env},
        check=False,
    )
    return completed.returncode, json.loads(completed.stdout)


STANDIN = str(PROJECT / "tests" / "standins" / "nvidia-smi")


def test_module_returns_facts_from_nvidia_smi(tmp_path: Path) -> None:
    pci = sysfs_from_capture(tmp_path / "pci", "h100-x1-sys-bus-pci-devices.txt")
    rc, result = run_module(
        tmp_path,
        {"nvidia_smi": STANDIN, "pci_devices_path": str(pci)},
        {
            "NVIDIA_SMI_STANDIN_QUERY_XML": str(NVIDIA / "h100-x1-nvidia-smi-q-x.xml"),
            "NVIDIA_SMI_STANDIN_TOPO": str(NVIDIA / "h100-x1-topo-m.txt"),
        },
    )
    assert rc == 0, result
    nvidia = result["ansible_facts"]["nvidia"]
    assert nvidia["gpu_count"] == 1
    assert nvidia["pci"]["gpus"] == 1
    assert nvidia["driver_version"] == "580.159.04"


def test_module_fails_clearly_when_the_driver_does_not_answer(tmp_path: Path) -> None:
    rc, result = run_module(
        tmp_path,
        {"nvidia_smi": STANDIN},
        {"NVIDIA_SMI_STANDIN_ERROR": str(NVIDIA / "nvidia-smi-error-driver-not-communicating.txt")},
    )
    assert rc == 1
    assert result["failed"] is True
    assert result["msg"].startswith("nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't")


def test_module_fails_clearly_when_nvidia_smi_is_missing(tmp_path: Path) -> None:
    rc, result = run_module(tmp_path, {"nvidia_smi": "nvidia-smi-that-is-not-here"}, {})
    assert rc == 1
    assert (
        result["msg"]
        == "nvidia-smi-that-is-not-here not found: the NVIDIA driver utilities are not installed"
    )


def test_pci_only_needs_no_nvidia_smi(tmp_path: Path) -> None:
    pci = sysfs_from_lspci(tmp_path / "pci", "h100-hgx8-rhel94-host-lspci-Dnn-egrep.txt")
    rc, result = run_module(
        tmp_path, {"pci_only": True, "nvidia_smi": "absent", "pci_devices_path": str(pci)}, {}
    )
    assert rc == 0
    assert result["ansible_facts"]["nvidia"] == {
        "pci": {"gpus": 8, "nvswitches": 4, "gpu_device_ids": ["0x2330"]}
    }


def test_fabric_manager_matches_the_driver_of_its_version_whatever_the_packaging_revision() -> None:
    assert not nvidia_host.fabric_manager_mismatch("580.105.08", "580.105.08-1")
    assert not nvidia_host.fabric_manager_mismatch("580.105.08-0ubuntu1", "580.105.08-1")
    assert nvidia_host.fabric_manager_mismatch("580.105.08", "590.44.01-1")


def test_an_absent_driver_or_fabric_manager_is_no_mismatch() -> None:
    assert not nvidia_host.fabric_manager_mismatch("", "580.105.08-1")
    assert not nvidia_host.fabric_manager_mismatch("580.105.08", "")


def test_the_roles_filters_are_the_module_utils_rule() -> None:
    filters = FilterModule().filters()
    assert filters["fabric_manager_mismatch"] is nvidia_host.fabric_manager_mismatch
    assert filters["upstream_version"]("580.105.08-1") == "580.105.08"
