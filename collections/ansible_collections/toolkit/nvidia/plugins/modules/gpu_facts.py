#!/usr/bin/python
"""Ansible module: NVIDIA GPU facts from the PCI bus and from nvidia-smi."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_facts
short_description: NVIDIA GPU facts from the PCI bus and nvidia-smi
description:
  - Reads NVIDIA GPUs and NVSwitches from C(/sys/bus/pci/devices), which needs no driver.
  - Unless O(pci_only) is set, also runs C(nvidia-smi -q -x) and C(nvidia-smi topo -m) and returns the
    GPU count, models, UUIDs, memory, driver and CUDA versions, persistence and MIG modes, NVLink and
    NVSwitch presence, the fabric state and the uncorrectable ECC error counts.
  - Fails with one clear message when nvidia-smi is missing or cannot talk to the driver.
options:
  pci_only:
    description: Only read the PCI bus (before the driver is installed).
    type: bool
    default: false
  nvidia_smi:
    description: The nvidia-smi program, by name or path.
    type: str
    default: nvidia-smi
  pci_devices_path:
    description: Where the kernel lists PCI devices.
    type: path
    default: /sys/bus/pci/devices
author: toolkit
"""

EXAMPLES = r"""
- name: Count the GPUs before the driver is installed
  toolkit.nvidia.gpu_facts:
    pci_only: true

- name: Read GPU facts
  toolkit.nvidia.gpu_facts:
- name: Show them
  ansible.builtin.debug:
    msg: "{{ ansible_facts.nvidia.gpu_count }} x {{ ansible_facts.nvidia.gpu_model }}"
"""

RETURN = r"""
ansible_facts:
  description: Under C(nvidia). C(pci) is always there; the rest only without O(pci_only).
  returned: always
  type: dict
  sample:
    nvidia:
      pci: {gpus: 8, nvswitches: 4, gpu_device_ids: ["0x2330"]}
      gpu_count: 8
      gpu_model: NVIDIA H100 80GB HBM3
      driver_version: 580.105.08
      cuda_version: "13.0"
      nvlink: true
      nvswitch: true
      fabric_state: Completed
"""

import re
import xml.etree.ElementTree as ElementTree
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.toolkit.nvidia.plugins.module_utils.nvidia_host import PCI_DEVICES, pci_inventory

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
NOT_AVAILABLE = ("N/A", "", None)


def _text(node: ElementTree.Element | None, path: str) -> str | None:
    found = node.find(path) if node is not None else None
    return found.text.strip() if found is not None and found.text is not None else None


def _mib(value: str | None) -> int | None:
    match = re.match(r"(\d+)\s*MiB", value or "")
    return int(match.group(1)) if match else None


def _uncorrectable(node: ElementTree.Element | None) -> int:
    """Sum of the uncorrectable counters; their names differ between nvidia-smi DTD versions."""
    if node is None:
        return 0
    return sum(
        int(child.text)
        for child in node
        if "uncorrectable" in child.tag and child.text is not None and child.text.strip().isdigit()
    )


def parse_query_xml(text: str) -> dict[str, Any]:
    """The parts of `nvidia-smi -q -x` the cluster cares about."""
    root = ElementTree.fromstring(text)
    gpus = []
    for index, gpu in enumerate(root.findall("gpu")):
        ecc = gpu.find("ecc_errors")
        gpus.append(
            {
                "index": index,
                "name": _text(gpu, "product_name"),
                "architecture": _text(gpu, "product_architecture"),
                "uuid": _text(gpu, "uuid"),
                "pci_bus_id": gpu.get("id"),
                "memory_total_mib": _mib(_text(gpu, "fb_memory_usage/total")),
                "persistence_mode": _text(gpu, "persistence_mode") == "Enabled",
                "mig_mode": _text(gpu, "mig_mode/current_mig"),
                "ecc_mode": _text(gpu, "ecc_mode/current_ecc"),
                "ecc_uncorrectable_volatile": _uncorrectable(
                    ecc.find("volatile") if ecc is not None else None
                ),
                "ecc_uncorrectable_aggregate": _uncorrectable(
                    ecc.find("aggregate") if ecc is not None else None
                ),
                "fabric_state": _text(gpu, "fabric/state"),
            }
        )
    return {
        "driver_version": _text(root, "driver_version"),
        "cuda_version": _text(root, "cuda_version"),
        "attached_gpus": int(_text(root, "attached_gpus") or len(gpus)),
        "gpus": gpus,
    }


def parse_topology(text: str) -> dict[str, Any]:
    """GPU-to-GPU links from `nvidia-smi topo -m`: NV# is a bonded set of # NVLinks."""
    lines = [ANSI_ESCAPE.sub("", line) for line in text.splitlines()]
    header: list[str] = []
    links: dict[str, dict[str, str]] = {}
    for line in lines:
        fields = [field for field in re.split(r"\s*\t\s*| {2,}", line.strip()) if field]
        if not fields:
            continue
        if not header and fields[0] == "GPU0":
            header = [name for name in fields if re.fullmatch(r"GPU\d+", name)]
        elif header and re.fullmatch(r"GPU\d+", fields[0]):
            cells = fields[1 : 1 + len(header)]
            links[fields[0]] = {
                peer: cell for peer, cell in zip(header, cells, strict=False) if peer != fields[0]
            }
    widths = [
        int(cell[2:]) for row in links.values() for cell in row.values() if re.fullmatch(r"NV\d+", cell)
    ]
    return {
        "gpus": header,
        "links": links,
        "nvlink": bool(widths),
        "nvlinks_per_pair": max(widths, default=0),
    }


def gpu_facts(query: dict[str, Any], topology: dict[str, Any], pci: dict[str, Any]) -> dict[str, Any]:
    gpus = query["gpus"]
    models = sorted({gpu["name"] for gpu in gpus if gpu["name"]})
    fabric_states = sorted({gpu["fabric_state"] for gpu in gpus if gpu["fabric_state"] not in NOT_AVAILABLE})
    return {
        "pci": pci,
        "gpu_count": len(gpus),
        "gpu_model": models[0] if len(models) == 1 else ("mixed" if models else None),
        "gpu_models": models,
        "gpus": gpus,
        "driver_version": query["driver_version"],
        "cuda_version": query["cuda_version"],
        "persistence_mode": bool(gpus) and all(gpu["persistence_mode"] for gpu in gpus),
        "mig_enabled": any(gpu["mig_mode"] == "Enabled" for gpu in gpus),
        "nvlink": topology["nvlink"],
        "nvlinks_per_pair": topology["nvlinks_per_pair"],
        # Hopper reports its NVSwitch fabric per GPU; the bridges on the bus say so before the driver.
        "nvswitch": bool(fabric_states) or pci["nvswitches"] > 0,
        "fabric_state": fabric_states[0] if len(fabric_states) == 1 else (fabric_states or None),
        "ecc_uncorrectable_volatile": sum(gpu["ecc_uncorrectable_volatile"] for gpu in gpus),
        "ecc_uncorrectable_aggregate": sum(gpu["ecc_uncorrectable_aggregate"] for gpu in gpus),
    }


def _first_line(*texts: str) -> str:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                return line.strip()
    return "no output"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pci_only": {"type": "bool", "default": False},
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
            "pci_devices_path": {"type": "path", "default": PCI_DEVICES},
        },
        supports_check_mode=True,
    )
    pci = pci_inventory(module.params["pci_devices_path"])
    if module.params["pci_only"]:
        module.exit_json(changed=False, ansible_facts={"nvidia": {"pci": pci}})

    smi = module.get_bin_path(module.params["nvidia_smi"])
    if smi is None:
        module.fail_json(
            msg=f"{module.params['nvidia_smi']} not found: the NVIDIA driver utilities are not installed"
        )
    rc, out, err = module.run_command([smi, "-q", "-x"])
    if rc != 0:
        module.fail_json(msg=f"nvidia-smi failed (exit {rc}): {_first_line(out, err)}", rc=rc)
    try:
        query = parse_query_xml(out)
    except ElementTree.ParseError as error:
        module.fail_json(msg=f"nvidia-smi -q -x printed no valid XML: {error}")
    rc, topo_out, topo_err = module.run_command([smi, "topo", "-m"])
    if rc != 0:
        module.fail_json(
            msg=f"nvidia-smi topo -m failed (exit {rc}): {_first_line(topo_out, topo_err)}", rc=rc
        )
    module.exit_json(changed=False, ansible_facts={"nvidia": gpu_facts(query, parse_topology(topo_out), pci)})


if __name__ == "__main__":
    main()
