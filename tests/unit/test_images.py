from __future__ import annotations

import hashlib
import re
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from toolkit import images
from toolkit.errors import BadInputError, MissingToolError, ToolkitError

PROJECT = Path(__file__).resolve().parents[2]
TOOLKIT_REQUIREMENTS = PROJECT / "images" / "toolkit" / "requirements.txt"


def test_missing_builder_is_one_line_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match=r"no image builder found \(podman or buildah or docker\)"):
        images.find_builder()


def test_asked_for_builder_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match=r"\(docker\)"):
        images.find_builder("docker")


def test_dockerfile_pins_upstream_ttyd_checksum() -> None:
    pinned = images.pinned_ttyd_sha256(PROJECT / "images" / "shell" / "Dockerfile")
    assert pinned == "8a217c968aba172e0dbf3f34447218dc015bc4d5e59bf51db2f2cd12b7be4f55"


def test_local_ttyd_with_another_checksum_is_refused_before_building(tmp_path: Path) -> None:
    fake = tmp_path / "ttyd"
    fake.write_bytes(b"not ttyd")
    with pytest.raises(BadInputError, match="not the pinned"):
        images.build(
            PROJECT, lambda _: None, base=None, tag="t", ttyd=fake, builder="podman", log=tmp_path / "log"
        )


def test_missing_local_ttyd_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        images.build(
            PROJECT,
            lambda _: None,
            base=None,
            tag="t",
            ttyd=tmp_path / "nope",
            builder="podman",
            log=tmp_path / "log",
        )


def make_wheel(directory: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A minimal pure-Python wheel, enough for pip to download and for the pins to name."""
    wheel = directory / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        archive.writestr(f"{name}/tag.txt", tag)  # each tag's wheel its own bytes
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def digest(wheel: Path) -> str:
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


@pytest.fixture
def wheelhouse(tmp_path: Path) -> tuple[Path, Path]:
    """A directory with two wheels, and a requirements file pinning them (one with two hashes)."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    alpha, beta = make_wheel(house, "alpha_lib", "1.0"), make_wheel(house, "beta", "2.3")
    requirements = tmp_path / "requirements.txt"
    other = "0" * 64
    requirements.write_text(
        f"# comment\nAlpha.Lib==1.0 \\\n    --hash=sha256:{other} \\\n    --hash=sha256:{digest(alpha)}\n"
        f"beta==2.3 --hash=sha256:{digest(beta)}  # the comment of a line\n"
    )
    return house, requirements


def test_the_lifecycle_image_pins_what_the_shell_commands_import_and_no_ansible() -> None:
    pinned = {re.sub(r"[-_.]+", "-", p.name).lower() for p in images.pinned_wheels(TOOLKIT_REQUIREMENTS)}
    wanted = {
        re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower()
        for requirement in metadata.requires("toolkit") or []
        if "extra ==" not in requirement
    }
    lazily_imported = {"ansible", "ansible-runner", "paramiko", "fabric", "jinja2"}
    assert wanted - lazily_imported <= pinned
    assert not pinned & (lazily_imported | {"markupsafe", "invoke", "bcrypt", "pynacl"})
    assert all(len(p.hashes) == 1 for p in images.pinned_wheels(TOOLKIT_REQUIREMENTS))


def test_gathering_wheels_takes_each_pinned_file_by_its_sha256(
    wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    house, requirements = wheelhouse
    make_wheel(house, "unrelated", "9.9")
    target = tmp_path / "context"
    target.mkdir()
    images.gather_wheels(requirements, house, target)
    assert sorted(p.name for p in target.iterdir()) == [
        "alpha_lib-1.0-py3-none-any.whl",
        "beta-2.3-py3-none-any.whl",
    ]


def test_a_wheels_dir_with_a_changed_wheel_is_one_line_naming_it(
    wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    house, requirements = wheelhouse
    (house / "beta-2.3-py3-none-any.whl").write_bytes(b"changed")
    with pytest.raises(
        BadInputError, match=r"^--wheels .* has no wheel of beta==2\.3 with the sha256 .* pins \(it needs"
    ):
        images.gather_wheels(requirements, house, tmp_path)


@pytest.mark.parametrize(
    ("wheels", "refusal"),
    [
        ("nope", r"^--wheels .*nope: no such directory$"),  # before anything is built
        ("wheels", r"has no wheel of annotated-doc==[\d.]+ with the sha256"),  # an empty one
    ],
)
def test_a_wheels_dir_missing_or_lacking_a_pinned_wheel_is_bad_input(
    tmp_path: Path, wheels: str, refusal: str
) -> None:
    (tmp_path / "wheels").mkdir()
    with pytest.raises(BadInputError, match=refusal):
        images.build(
            PROJECT,
            lambda _: None,
            image=images.Image.toolkit,
            base=None,
            tag="t",
            ttyd=None,
            wheels=tmp_path / wheels,
            builder="no-such-builder",
            log=tmp_path / "log",
        )


def test_ttyd_is_refused_for_the_toolkit_image_and_the_shell_needs_jupyterlabs_pinned_wheels(
    tmp_path: Path,
) -> None:
    common: dict[str, Any] = {"base": None, "tag": "t", "builder": "no-such-builder", "log": tmp_path / "log"}
    with pytest.raises(BadInputError, match=r"^--ttyd is for the shell image"):
        images.build(PROJECT, lambda _: None, image=images.Image.toolkit, ttyd=tmp_path / "ttyd", **common)
    (tmp_path / "wheels").mkdir()
    with pytest.raises(
        BadInputError, match=r"has no wheel of \S+==\S+ with the sha256 \S+jupyter-requirements"
    ):
        images.build(PROJECT, lambda _: None, ttyd=None, wheels=tmp_path / "wheels", **common)


def test_pinned_wheels_are_downloaded_checked_against_their_sha256(
    wheelhouse: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    house, requirements = wheelhouse
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds them in the wheelhouse, as it would on PyPI
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    target = tmp_path / "downloaded"
    images.download_wheels(requirements, target, tmp_path / "log")
    assert sorted(p.name for p in target.iterdir()) == [
        "alpha_lib-1.0-py3-none-any.whl",
        "beta-2.3-py3-none-any.whl",
    ]
    changed = house / "beta-2.3-py3-none-any.whl"
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(
        ToolkitError, match=r"^downloading the pinned wheels for Python 3.11 failed \(exit 1\); see "
    ):
        images.download_wheels(requirements, tmp_path / "again", tmp_path / "log")
    assert "HASHES" in (tmp_path / "log").read_text()


def test_the_toolkits_own_wheel_is_built_without_touching_the_checkout(tmp_path: Path) -> None:
    images.build_own_wheel(PROJECT, tmp_path, tmp_path / "log")
    (wheel,) = tmp_path.glob("toolkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "toolkit = toolkit.cli.main:run" in archive.read(entry_points).decode()
    assert "toolkit/kube.py" in names and not any("__pycache__" in n for n in names)
    assert not (PROJECT / "build").exists()


def test_a_pin_of_several_pythons_wheels_gathers_each_and_markers_choose_per_python(tmp_path: Path) -> None:
    house = tmp_path / "wheelhouse"
    house.mkdir()
    for_310 = make_wheel(house, "yaml_lib", "6.0", tag="cp310-cp310-manylinux_2_17_x86_64")
    for_311 = make_wheel(house, "yaml_lib", "6.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    new, old = make_wheel(house, "shell_kit", "9.0"), make_wheel(house, "shell_kit", "8.0")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# a comment line that ends as a continued line would \\\n"
        f"yaml-lib==6.0 --hash=sha256:{digest(for_310)} --hash=sha256:{digest(for_311)}\n"
        f'shell-kit==9.0 ; python_version >= "3.11" --hash=sha256:{digest(new)}\n'
        f'shell-kit==8.0 ; python_version < "3.11" --hash=sha256:{digest(old)}\n'
    )
    target = tmp_path / "gathered"
    target.mkdir()
    images.gather_wheels(requirements, house, target)
    assert sorted(p.name for p in target.iterdir()) == sorted(w.name for w in (for_310, for_311, new, old))
    assert images.for_python(requirements, "3.10").split() == [
        "yaml-lib==6.0", f"--hash=sha256:{digest(for_310)}", f"--hash=sha256:{digest(for_311)}",
        "shell-kit==8.0", f"--hash=sha256:{digest(old)}",
    ]  # fmt: skip
    assert "shell-kit==9.0" in images.for_python(requirements, "3.11")
