"""The emulated control plane keeps its cluster in the data dir: objects, versions, CA, keys, tokens."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from testbed.apiserver.persist import DB_NAME, DataDirError
from testbed.apiserver.server import APIServer, ServerConfig
from testbed.embedded import EmbeddedTestbed

from .helpers import raw, raw_json


def _cm(name: str) -> dict:
    return {"metadata": {"name": name}, "data": {"k": name}}


def test_restart_brings_back_objects_counter_ca_and_tokens(tmp_path: Path):
    with EmbeddedTestbed(33, data_dir=tmp_path) as tb:
        port, admin, ca = tb.server.port, tb.admin_token, tb.ca_path.read_bytes()
        assert raw_json(tb, "POST", "/api/v1/namespaces", {"metadata": {"name": "keep"}})[0] == 201
        code, cm = raw_json(tb, "POST", "/api/v1/namespaces/keep/configmaps", _cm("a"))
        assert code == 201
        assert raw_json(tb, "POST", "/api/v1/namespaces/keep/configmaps", _cm("gone"))[0] == 201
        assert raw_json(tb, "DELETE", "/api/v1/namespaces/keep/configmaps/gone")[0] == 200
        raw_json(tb, "POST", "/api/v1/namespaces/keep/serviceaccounts", {"metadata": {"name": "sa"}})
        code, tr = raw_json(tb, "POST", "/api/v1/namespaces/keep/serviceaccounts/sa/token",
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
        assert code == 201
        sa_token = tr["status"]["token"]
        listed = raw_json(tb, "GET", "/api/v1/namespaces/keep/configmaps")[1]
        last_rv = int(listed["metadata"]["resourceVersion"])
        kubeconfig = tb.kubeconfig_path.read_text()

    with EmbeddedTestbed(33, data_dir=tmp_path) as tb:
        # same address, same CA, same admin token: the old kubeconfig works unchanged
        assert tb.server.port == port
        assert tb.admin_token == admin
        assert tb.ca_path.read_bytes() == ca
        assert tb.kubeconfig_path.read_text() == kubeconfig
        code, got = raw_json(tb, "GET", "/api/v1/namespaces/keep/configmaps/a")
        assert code == 200
        assert got == cm  # uid, resourceVersion, timestamps: byte for byte the stored object
        assert raw_json(tb, "GET", "/api/v1/namespaces/keep/configmaps/gone")[0] == 404
        # a service-account token issued before the restart still authenticates
        code, body = raw_json(tb, "GET", "/api/v1/namespaces/keep/configmaps/a", token=sa_token)
        assert code == 403 and "system:serviceaccount:keep:sa" in body["message"]
        # the counter never goes back: the delete's version was handed out, so new ones are above it
        code, b = raw_json(tb, "POST", "/api/v1/namespaces/keep/configmaps", _cm("b"))
        assert code == 201 and int(b["metadata"]["resourceVersion"]) > last_rv
        # the watch history is not kept: an older version is 410 Gone (the client relists) ...
        path = f"/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion={last_rv - 1}"
        code, _, data = raw(tb, "GET", path)
        assert code == 200
        first = json.loads(data.splitlines()[0])
        assert first["type"] == "ERROR" and first["object"]["code"] == 410
        # ... while a watch from the version of a fresh list resumes
        rv = raw_json(tb, "GET", "/api/v1/namespaces/keep/configmaps")[1]["metadata"]["resourceVersion"]
        ctx = ssl.create_default_context(cafile=str(tb.ca_path))
        req = urllib.request.Request(
            f"{tb.url}/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=5",
            headers={"Authorization": f"Bearer {tb.admin_token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as stream:
            assert raw_json(tb, "POST", "/api/v1/namespaces/keep/configmaps", _cm("c"))[0] == 201
            ev = json.loads(stream.readline())
        assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "c"
        # the bootstrap objects are not duplicated or reset
        assert raw_json(tb, "GET", "/api/v1/namespaces/default")[0] == 200


def test_fresh_starts_empty(tmp_path: Path):
    with EmbeddedTestbed(33, data_dir=tmp_path) as tb:
        assert raw_json(tb, "POST", "/api/v1/namespaces", {"metadata": {"name": "old"}})[0] == 201
        ca, admin = tb.ca_path.read_bytes(), tb.admin_token
    tb = EmbeddedTestbed(33, data_dir=tmp_path)
    tb.config.fresh = True
    with tb:
        assert raw_json(tb, "GET", "/api/v1/namespaces/old")[0] == 404
        assert raw_json(tb, "GET", "/api/v1/namespaces/default")[0] == 200
        assert tb.ca_path.read_bytes() != ca
        assert tb.admin_token != admin


def _server(data_dir: Path, minor: int = 33) -> APIServer:
    return APIServer(ServerConfig(minor=minor, data_dir=data_dir))


def _populated(tmp_path: Path) -> Path:
    with EmbeddedTestbed(33, data_dir=tmp_path):
        pass
    return tmp_path


def test_garbage_database_is_refused_naming_the_file(tmp_path: Path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataDirError, match=rf"{tmp_path / DB_NAME}: not a testbed state database"):
        _server(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"this is not sqlite")  # nothing was reset


def test_foreign_sqlite_database_is_refused(tmp_path: Path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    with pytest.raises(DataDirError, match=r"not a testbed state database \(tables: songs\)"):
        _server(tmp_path)


def test_other_schema_version_and_other_minor_are_refused(tmp_path: Path):
    _populated(tmp_path)
    with pytest.raises(DataDirError, match=r"holds a Kubernetes 1\.33 cluster, not 1\.30"):
        _server(tmp_path, minor=30)
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("UPDATE meta SET v = '99' WHERE k = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(DataDirError, match=r"written by another testbed version \(schema 99"):
        _server(tmp_path)


def test_missing_ca_key_with_existing_cert_is_refused(tmp_path: Path):
    _populated(tmp_path)
    (tmp_path / "pki" / "ca.key").unlink()
    with pytest.raises(DataDirError, match=rf"{tmp_path / 'pki' / 'ca.key'}: missing"):
        _server(tmp_path)
    # the same for a data dir of the earlier testbed, which kept only ca.crt and no database
    (tmp_path / DB_NAME).unlink()
    with pytest.raises(DataDirError, match=r"ca\.key: missing, but the CA certificate .*ca\.crt exists"):
        _server(tmp_path)


def test_mismatched_or_corrupt_keys_are_refused(tmp_path: Path):
    _populated(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _populated(other)
    own_key = (tmp_path / "pki" / "ca.key").read_bytes()
    (tmp_path / "pki" / "ca.key").write_bytes((other / "pki" / "ca.key").read_bytes())
    with pytest.raises(DataDirError, match=r"ca\.key: does not belong to the CA certificate"):
        _server(tmp_path)
    (tmp_path / "pki" / "ca.key").write_bytes((other / "pki" / "ca.crt").read_bytes())
    with pytest.raises(DataDirError, match=r"ca\.key: not an unencrypted PEM private key"):
        _server(tmp_path)
    (tmp_path / "pki" / "ca.key").write_bytes(own_key)
    (tmp_path / "pki" / "sa.key").write_text("garbage")
    with pytest.raises(DataDirError, match=r"sa\.key: the service-account signing key is not an unencrypted"):
        _server(tmp_path)


def test_missing_signing_key_with_existing_cluster_is_refused(tmp_path: Path):
    _populated(tmp_path)
    (tmp_path / "pki" / "sa.key").unlink()
    with pytest.raises(DataDirError, match=r"sa\.key: missing, but .*state\.db holds a cluster"):
        _server(tmp_path)


def test_key_files_are_private(tmp_path: Path):
    _populated(tmp_path)
    for f in ("ca.key", "sa.key", "admin.token"):
        assert (tmp_path / "pki" / f).stat().st_mode & 0o777 == 0o600, f
    assert (tmp_path / DB_NAME).stat().st_mode & 0o777 == 0o600


def test_an_informer_rides_through_an_apiserver_restart(tmp_path: Path):
    """A client built from the old kubeconfig keeps working: its watch ends, the resume from the old
    version gets 410 Gone, it relists and sees what was written after the restart."""
    from kubeclient.client import Kube
    from kubeclient.informer import Informer

    tb = EmbeddedTestbed(33, data_dir=tmp_path).start()
    try:
        kube = Kube.from_config(str(tb.kubeconfig_path))
        kube.create("/api/v1/namespaces/default/configmaps", _cm("before"))
        inf = Informer(kube, "/api/v1/namespaces/default/configmaps").start()
        assert inf.wait_synced(10)
        assert inf.get("default/before") is not None
    finally:
        tb.stop()
    with EmbeddedTestbed(33, data_dir=tmp_path) as tb2:
        kube.create("/api/v1/namespaces/default/configmaps", _cm("after"))
        deadline = time.monotonic() + 20
        while inf.get("default/after") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        inf.stop()
        assert inf.get("default/after") is not None
        assert inf.get("default/before") is not None
        assert tb2.server is not None and tb2.server.restored > 0


def test_a_second_apiserver_on_the_same_data_dir_is_refused(tmp_path: Path):
    busy = rf"{tmp_path / DB_NAME}: in use by another testbed apiserver"
    with EmbeddedTestbed(33, data_dir=tmp_path), pytest.raises(DataDirError, match=busy):
        _server(tmp_path)
    backend = _server(tmp_path).backend  # released on stop
    assert backend is not None
    backend.close()


def test_fresh_is_refused_while_an_apiserver_holds_the_data_dir(tmp_path: Path):
    with EmbeddedTestbed(33, data_dir=tmp_path) as tb:
        with pytest.raises(DataDirError, match=r"in use by a running testbed apiserver; stop it before"):
            APIServer(ServerConfig(minor=33, data_dir=tmp_path, fresh=True))
        assert raw_json(tb, "GET", "/api/v1/namespaces/default")[0] == 200
        assert (tmp_path / DB_NAME).exists() and (tmp_path / "pki" / "ca.key").exists()


def test_corrupt_object_row_is_refused(tmp_path: Path):
    _populated(tmp_path)
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("UPDATE objects SET value = x'7b6e6f' WHERE name = 'default' AND store_key = 'namespaces'")
    db.commit()
    db.close()
    with pytest.raises(DataDirError, match=rf"{tmp_path / DB_NAME}: an object is not valid JSON"):
        _server(tmp_path)
