"""What the lab supplies where a role needs something this machine can't reach: the k3s release
and Node Feature Discovery's chart archive. Each stand-in is named in the generated inventory
(`toolkit_standins`), so the roles never tell it from the real thing and the run says what it
uses."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from pathlib import Path
from urllib.parse import quote

K3S_RELEASES = "https://github.com/k3s-io/k3s/releases/download"
# The lab's stand-in for k3s where no release can be downloaded, relative to the project.
K3S_STANDIN = Path("images/lab-host/standins/k3s")


NFD_RELEASES = "https://github.com/kubernetes-sigs/node-feature-discovery/releases/download"


def _role_default(project: Path, role: str, name: str) -> str:
    import yaml

    defaults = yaml.safe_load((project / "roles" / role / "defaults" / "main.yml").read_text())
    return str(defaults[name])


def k3s_version(project: Path) -> str:
    """The k3s release the k3s role installs by default."""
    return _role_default(project, "k3s", "k3s_version")


def nfd_version(project: Path) -> str:
    """The Node Feature Discovery release the node_feature_discovery role deploys by default."""
    return _role_default(project, "node_feature_discovery", "node_feature_discovery_version")


def k3s_release_reachable(version: str, timeout: float = 3.0) -> bool:
    return reachable(f"{K3S_RELEASES}/{quote(version)}/sha256sum-amd64.txt", timeout)


def nfd_chart_url(version: str) -> str:
    return f"{NFD_RELEASES}/{quote(version)}/node-feature-discovery-chart-{version.removeprefix('v')}.tgz"


def reachable(url: str, timeout: float = 3.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (urllib.error.URLError, OSError):
        return False


def lay_out_k3s_standin(project: Path, directory: Path, version: str) -> Path:
    """The stand-in k3s (K3S_STANDIN) as GitHub serves release `version`: `directory/version/k3s`,
    reporting that version, and its `sha256sum-amd64.txt`. The k3s role's molecule scenario lays
    out its releases with this too. Returns `directory/version`."""
    source = (project / K3S_STANDIN).read_text()
    binary = re.sub(r"^VERSION = .*$", f"VERSION = {version!r}", source, count=1, flags=re.MULTILINE)
    release = directory / version
    release.mkdir(parents=True, exist_ok=True)
    (release / "k3s").write_text(binary)
    (release / "k3s").chmod(0o755)
    digest = hashlib.sha256(binary.encode()).hexdigest()
    (release / "sha256sum-amd64.txt").write_text(f"{digest}  k3s\n")
    return release


def k3s_standin_settings(project: Path, directory: Path, version: str) -> dict[str, object]:
    """Lay out the stand-in k3s as an air-gap directory under `directory`; returns the inventory
    settings that make the k3s role install it (its sha256 pinned in `k3s_checksums`, as an
    inventory pins a release's), site.yml say so once, and verify.yml skip the checks that need
    the Kubernetes API it does not serve."""
    release = lay_out_k3s_standin(project, directory, version)
    return {
        "k3s_install_source": "airgap",
        "k3s_airgap_dir": str(release),
        "k3s_checksums": {version: hashlib.sha256((release / "k3s").read_bytes()).hexdigest()},
        "toolkit_standins": [
            f"k3s is the stand-in binary ({K3S_STANDIN}; no k3s release is reachable here): services run"
            " and tokens are real files, but no Kubernetes API answers"
        ],
        "verify_api_skip_reason": f"k3s here is the stand-in ({K3S_STANDIN}): it serves no Kubernetes API",
    }


def nfd_standin_chart(version: str) -> bytes:
    """A stand-in for Node Feature Discovery's chart archive `version`: a chart of that name and
    version that installs nothing, byte for byte the same each time (so its pin holds). The lab's
    k3s serves no Kubernetes API, so no helm controller would ever read more of it."""
    chart_yaml = (
        "apiVersion: v2\n"
        "name: node-feature-discovery\n"
        f"version: {version.removeprefix('v')}\n"
        f"appVersion: {version}\n"
        "description: STAND-IN for Node Feature Discovery's chart (toolkit lab); it installs nothing\n"
    ).encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        member = tarfile.TarInfo("node-feature-discovery/Chart.yaml")
        member.size, member.mtime, member.mode = len(chart_yaml), 0, 0o644
        archive.addfile(member, io.BytesIO(chart_yaml))
    return gzip.compress(tar_bytes.getvalue(), mtime=0)


def nfd_standin_settings(directory: Path, version: str) -> dict[str, object]:
    """Write the stand-in chart archive under `directory`; returns the inventory settings that make
    the node_feature_discovery role send it as an air-gapped site's archive, pinned as a site pins
    one, and site.yml say so once."""
    archive = directory / f"node-feature-discovery-chart-{version.removeprefix('v')}.tgz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(nfd_standin_chart(version))
    return {
        "node_feature_discovery_chart_archive": str(archive),
        "node_feature_discovery_chart_checksums": {
            version.removeprefix("v"): hashlib.sha256(archive.read_bytes()).hexdigest()
        },
        "toolkit_standins": [
            f"Node Feature Discovery's chart is a stand-in ({archive.name}; its release cannot be"
            " downloaded here): the manifest is written as on a real site, but it installs nothing"
        ],
    }
