from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import images
from toolkit.errors import BadInputError, MissingToolError

PROJECT = Path(__file__).resolve().parents[2]


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
