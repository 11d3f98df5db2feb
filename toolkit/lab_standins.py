"""What the lab supplies where a role needs something this machine can't reach: today the k3s
release. Each stand-in is named in the generated inventory (`toolkit_standins`), so the roles
never tell it from the real thing and the run says what it uses."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote

K3S_RELEASES = "https://github.com/k3s-io/k3s/releases/download"
# The lab's stand-in for k3s where no release can be downloaded, relative to the project.
K3S_STANDIN = Path("images/lab-host/standins/k3s")


def k3s_version(project: Path) -> str:
    """The k3s release the k3s role installs by default."""
    import yaml

    defaults = yaml.safe_load((project / "roles" / "k3s" / "defaults" / "main.yml").read_text())
    return str(defaults["k3s_version"])


def k3s_release_reachable(version: str, timeout: float = 3.0) -> bool:
    import urllib.error
    import urllib.request

    url = f"{K3S_RELEASES}/{quote(version)}/sha256sum-amd64.txt"
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
