"""toolkit.kube against the stand-in API server, through only the ApiClient surface that every
major version of the `kubernetes` client has kept, so the pin in pyproject.toml can stay wide."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.standins.kube_apiserver import FakeApiServer
from toolkit import kube
from toolkit.errors import BadInputError


def surface_only(api: Any) -> SimpleNamespace:
    """The ApiClient with nothing but the parts toolkit.kube may use: touching anything else,
    such as call_api, update_params_for_auth or a RESTResponse, is an AttributeError here."""
    configuration = api.configuration
    return SimpleNamespace(
        configuration=SimpleNamespace(host=configuration.host, auth_settings=configuration.auth_settings),
        rest_client=SimpleNamespace(pool_manager=api.rest_client.pool_manager),
    )


@pytest.fixture
def admin(admin_kubeconfig: Path) -> kube.Kube:
    connection = kube.connect(admin_kubeconfig)
    return kube.Kube(api=surface_only(connection.api), server=connection.server, namespace=None)


def config_map(name: str, **data: str) -> kube.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "test"}},
        "data": data,
    }


def test_every_method_works_through_the_surface_every_client_major_keeps(admin: kube.Kube) -> None:
    assert admin.get("ConfigMap", "settings", "default") is None
    created, new = admin.create(config_map("settings", a="1"))
    assert new and created["data"] == {"a": "1"}
    existing, new = admin.create(config_map("settings", a="2"))
    assert not new and existing["data"] == {"a": "1"}
    applied = admin.apply(config_map("settings", a="3"))
    assert applied["data"] == {"a": "3"}
    assert admin.merge_patch("ConfigMap", "settings", "default", {"data": {"b": "4"}})["data"] == {
        "a": "3",
        "b": "4",
    }
    listed = admin.list("ConfigMap", "default", labels="app=test")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["settings"]
    assert admin.request("GET", "/api/v1/namespaces/default/configmaps/settings")["data"]["b"] == "4"
    assert admin.delete("ConfigMap", "settings", "default") is True
    assert admin.delete("ConfigMap", "settings", "default") is False


def test_refusals_are_api_errors_with_the_status_code_and_reason(admin: kube.Kube) -> None:
    admin.create(config_map("taken"))
    with pytest.raises(kube.ApiError) as refused:
        admin.request("POST", "/api/v1/namespaces/default/configmaps", body=config_map("taken"))
    assert (refused.value.code, refused.value.reason) == (409, "AlreadyExists")
    assert "\n" not in str(refused.value)


def test_a_refused_token_is_a_one_line_401(fake_cluster: FakeApiServer, tmp_path: Path) -> None:
    stranger = kube.connect(fake_cluster.kubeconfig(tmp_path / "stranger", token="not-a-token"))
    with pytest.raises(kube.ApiError, match=r"^the API server refused the credentials") as refused:
        stranger.list("Namespace")
    assert refused.value.code == 401


def test_watch_streams_each_event_as_it_happens(admin: kube.Kube) -> None:
    started = time.monotonic()
    threading.Timer(0.3, admin.create, [config_map("later")]).start()
    for event in admin.watch("ConfigMap", "default", fields="metadata.name=later", timeout=20):
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "later"
        break
    assert time.monotonic() - started < 10  # the event came while the watch was open


def test_text_reads_a_plain_text_endpoint(admin: kube.Kube, fake_cluster: FakeApiServer) -> None:
    spec = {"containers": [{"name": "main", "image": "busybox"}]}
    fake_cluster.seed("Pod", {"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    assert "stand-in log of p" in admin.text("/api/v1/namespaces/default/pods/p/log", {"tailLines": 5})


def test_list_is_one_request(admin: kube.Kube, fake_cluster: FakeApiServer) -> None:
    fake_cluster.reset_request_log()
    admin.list("Pod", "default")
    assert len(fake_cluster.requests) == 1


@pytest.fixture
def in_a_pod(fake_cluster: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a pod has: the service account's files where Kubernetes mounts them, the API server's
    address in its environment, and no kubeconfig anywhere."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(fake_cluster.admin_token)
    (account / "ca.crt").write_bytes(fake_cluster.ca_pem)
    (account / "namespace").write_text("toolkit-system")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(fake_cluster.port))
    return account


def test_in_a_pod_without_a_kubeconfig_it_connects_as_the_service_account(
    in_a_pod: Path, fake_cluster: FakeApiServer
) -> None:
    connection = kube.connect()
    assert (connection.server, connection.namespace) == (fake_cluster.url, "toolkit-system")
    assert connection.get("Namespace", "toolkit-system") is not None


def test_in_a_pod_a_kubeconfig_asked_for_still_comes_first(
    in_a_pod: Path, fake_cluster: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_a_pod / "token").write_text("not-a-token")
    with pytest.raises(BadInputError, match=r"^no kubeconfig at .*missing"):
        kube.connect(tmp_path / "missing")
    monkeypatch.setenv("KUBECONFIG", str(fake_cluster.kubeconfig(tmp_path / "admin.kubeconfig")))
    assert kube.connect().get("Namespace", "toolkit-system") is not None


def test_outside_a_pod_a_missing_kubeconfig_is_the_one_line_error(
    in_a_pod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(BadInputError, match=r"^no kubeconfig at .*/home/\.kube/config: pass --kubeconfig"):
        kube.connect()


def test_a_pod_without_the_api_servers_port_is_one_line(
    in_a_pod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT")
    with pytest.raises(
        BadInputError, match=r"^cannot use the pod's service account \(.*\): Service host/port"
    ):
        kube.connect()
