"""What an NVIDIA host holds and whether its parts agree: the one home of these rules.

The gpu_facts module and the nvidia_driver role (through the fabric_manager filters) import
it; `toolkit doctor` runs this file's source with each host's python3 and imports it locally.
So it stays standard-library Python that any supported host's python3 runs, with no Ansible.
"""

from __future__ import annotations

import os
from typing import Any

PCI_DEVICES = "/sys/bus/pci/devices"
NVIDIA_VENDOR = 0x10DE
PCI_CLASS_DISPLAY = 0x03  # VGA (0x0300) and 3D controllers (0x0302): GPUs
PCI_CLASS_BRIDGE_OTHER = 0x0680  # how NVSwitches show on the bus


def pci_inventory(devices_path: str = PCI_DEVICES) -> dict[str, Any]:
    """NVIDIA GPUs and NVSwitches on the PCI bus, read from sysfs as lspci does."""
    gpus, nvswitches, device_ids = 0, 0, set()
    if os.path.isdir(devices_path):
        for address in sorted(os.listdir(devices_path)):
            fields = {}
            for name in ("vendor", "device", "class"):
                try:
                    with open(os.path.join(devices_path, address, name)) as handle:
                        fields[name] = int(handle.read().strip(), 16)
                except (OSError, ValueError):
                    break
            else:
                if fields["vendor"] != NVIDIA_VENDOR:
                    continue
                if fields["class"] >> 16 == PCI_CLASS_DISPLAY:
                    gpus += 1
                    device_ids.add(f"0x{fields['device']:04x}")
                elif fields["class"] >> 8 == PCI_CLASS_BRIDGE_OTHER:
                    nvswitches += 1
    return {"gpus": gpus, "nvswitches": nvswitches, "gpu_device_ids": sorted(device_ids)}


def upstream_version(package_version: str) -> str:
    """A version without its packaging revision: 580.105.08-1 and 580.105.08 are both 580.105.08."""
    return package_version.split("-")[0]


def fabric_manager_mismatch(driver: str, fabric_manager: str) -> bool:
    """Whether Fabric Manager is of another version than the driver: CUDA then fails with error
    802 until they match. Either may carry a packaging revision; an absent one ('') matches."""
    return bool(driver and fabric_manager) and upstream_version(driver) != upstream_version(fabric_manager)
