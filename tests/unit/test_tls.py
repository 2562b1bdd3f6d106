"""A Ray pool's ``tls`` key: checked when the config is made (keys, files that exist, paths
relative to pit.toml), its files read and checked when a worker starts
(`protocol.tls.read_pool_tls`), and handed to the worker in its environment."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.config import load_config, make_pool_config
from runtime.errors import ConfigError
from runtime.protocol import tls
from tests.tls_support import SERVER_NAME, Certs, make_certs

RAY = {"backend": "ray", "ray_address": "auto"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


def test_a_ray_pool_takes_tls_files_relative_to_its_config_file(certs: Certs) -> None:
    folder = certs.ca.parent
    (folder / "pit.toml").write_text(
        '[pools.big]\nbackend = "ray"\nray_address = "auto"\n'
        'tls = { cert = "worker.pem", key = "worker.key", ca = "ca.pem", '
        f'server_name = "{SERVER_NAME}" }}\n')
    pool = load_config(folder / "pit.toml").pools["big"]
    assert dict(pool.tls) == {"cert": str(certs.cert), "key": str(certs.key),
                              "ca": str(certs.ca), "server_name": SERVER_NAME}
    assert make_pool_config("p", **RAY).tls == {}  # none by default


def _refused(certs: Certs, tls_table: object, **values: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make_pool_config("p", **{**RAY, **values}, tls=tls_table)
    assert info.value.hint
    return info.value


@pytest.mark.parametrize(("drop", "says"), [
    ("cert", "tls.cert is missing (tls.key and tls.ca given)"),
    ("key", "tls.key is missing (tls.cert and tls.ca given)"),
    ("ca", "tls.ca is missing (tls.cert and tls.key given): the host verifies"),
])
def test_a_tls_table_without_one_of_its_files_is_refused_by_name(
        certs: Certs, drop: str, says: str) -> None:
    table = {k: v for k, v in certs.table().items() if k != drop}
    err = _refused(certs, table)
    assert says in str(err) and f"add {drop} = " in (err.hint or "")


def test_a_tls_table_with_only_a_server_name_is_refused_naming_what_is_given() -> None:
    err = _refused(None, {"server_name": "pit-worker"})  # type: ignore[arg-type]
    assert "tls.cert is missing (only tls.server_name given)" in str(err), str(err)


@pytest.mark.parametrize(("change", "says"), [
    ({"crt": "x.pem"}, "tls has no key 'crt'; its keys: cert, key, ca, server_name"),
    ({"ca": ""}, "tls.ca = '' is invalid; expected a file path"),
    ({"server_name": 7}, "tls.server_name = 7 is invalid; expected a name"),
    ({"key": "/nonexistent/worker.key"}, "tls.key = '/nonexistent/worker.key': no such file"),
])
def test_bad_tls_settings_are_refused_by_name(certs: Certs, change: dict, says: str) -> None:
    assert says in str(_refused(certs, {**certs.table(), **change}))


def test_tls_on_a_local_pool_is_refused_saying_why(certs: Certs) -> None:
    with pytest.raises(ConfigError) as info:
        make_pool_config("p", tls=certs.table())
    assert "tls applies to backend = \"ray\" only" in str(info.value)
    assert "unix sockets" in str(info.value) and "backend = \"ray\"" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="tls = 'x' is invalid"):
        make_pool_config("p", **RAY, tls="x")


def test_the_files_are_read_and_handed_to_the_worker_in_its_environment(certs: Certs) -> None:
    worker, host = tls.read_pool_tls(make_pool_config("p", **RAY, tls=certs.table()).tls, "p")
    assert host == tls.HostTls(certs.ca.read_bytes(), SERVER_NAME)
    env = worker.env()
    assert env == {tls.ENV_CERT: certs.cert.read_text(), tls.ENV_KEY: certs.key.read_text()}
    assert tls.take_from_env(env) == worker and env == {}  # taken out
    assert tls.take_from_env({}) is None
    worker.server_context()  # OpenSSL loads them without a file on disk
    assert host.channel_options() == [("grpc.ssl_target_name_override", SERVER_NAME)]
    assert host.server_hostname("10.0.0.5") == SERVER_NAME
    assert tls.HostTls(b"", "").server_hostname("10.0.0.5") == "10.0.0.5"


@pytest.mark.parametrize(("key", "swap", "says"), [
    ("cert", "key", "tls.cert {} is not a PEM file with '-----BEGIN CERTIFICATE-----'"),
    ("ca", "key", "tls.ca {} is not a PEM file"),
    ("key", "ca", "tls.key {} is not a PEM file with 'PRIVATE KEY-----'"),
])
def test_a_file_that_is_not_what_its_key_says_is_refused_when_a_worker_starts(
        certs: Certs, key: str, swap: str, says: str) -> None:
    table = {**certs.table(), key: certs.table()[swap]}
    with pytest.raises(ConfigError) as info:
        tls.read_pool_tls(table, "pool 'p'")
    assert says.format(table[key]) in str(info.value)
    assert info.value.details["key"] == f"tls.{key}" and "PEM" in (info.value.hint or "")


def test_a_key_of_another_certificate_or_an_encrypted_one_is_refused(
        certs: Certs, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-out", str(other)], check=True,
                   capture_output=True, timeout=60)
    with pytest.raises(ConfigError, match="tls.key does not match tls.cert"):
        tls.read_pool_tls({**certs.table(), "key": str(other)}, "pool 'p'")
    locked = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", str(certs.key), "-aes256", "-passout",
                    "pass:xyz", "-out", str(locked)], check=True, capture_output=True,
                   timeout=60)
    with pytest.raises(ConfigError, match="tls.key is an encrypted key") as info:
        tls.read_pool_tls({**certs.table(), "key": str(locked)}, "pool 'p'")
    assert "openssl pkey" in str(info.value)


def test_a_certificate_the_host_would_refuse_is_refused_before_any_worker_starts(
        certs: Certs) -> None:
    with pytest.raises(ConfigError, match="tls.ca did not issue tls.cert") as info:
        tls.read_pool_tls({**certs.table(), "ca": str(certs.other_ca)}, "pool 'p'")
    assert "certificate verify failed" in str(info.value) or "issuer" in str(info.value)
    with pytest.raises(ConfigError, match="tls.server_name = 'other.test' is not a name in "
                                          "tls.cert") as info:
        tls.read_pool_tls({**certs.table(), "server_name": "other.test"}, "pool 'p'")
    assert "subjectAltName" in (info.value.hint or "")
    # without a server_name only the CA can be checked (the name is then the worker's address)
    tls.read_pool_tls({k: v for k, v in certs.table().items() if k != "server_name"}, "p")


def test_doctor_checks_a_ray_pools_tls_files(certs: Certs) -> None:
    from runtime import doctor

    good = make_pool_config("big", **RAY, tls=certs.table())
    check = doctor._guard("pool big: tls", lambda: doctor._tls(good))
    assert check.status == "pass" and SERVER_NAME in check.message
    bad = make_pool_config("big", **RAY, tls={**certs.table(), "ca": str(certs.other_ca)})
    check = doctor._guard("pool big: tls", lambda: doctor._tls(bad))
    assert check.status == "fail" and "tls.ca did not issue tls.cert" in check.message
    assert "point tls.ca at the CA" in check.remediation


def test_the_workers_private_key_is_not_in_the_repr_of_what_carries_it(certs: Certs) -> None:
    # a repr lands in logs, tracebacks and pytest's assertion messages: the key must not
    worker, host = tls.read_pool_tls({"cert": str(certs.cert), "key": str(certs.key),
                                      "ca": str(certs.ca), "server_name": SERVER_NAME}, "p")
    key_body = certs.key.read_text().splitlines()[1]
    assert key_body in worker.key.decode() and key_body not in repr(worker)
    assert "CERTIFICATE" in repr(worker)  # the certificate chain is public


class _Overlaps:
    """An SSLSocket that notes when two threads are inside it at once (and makes each call
    last a little, so that unserialised calls would overlap)."""

    def __init__(self, conn: ssl.SSLSocket) -> None:
        self._conn, self._inside, self.overlaps = conn, 0, 0
        self._count = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _call(self, name: str, *args: Any) -> Any:
        with self._count:
            self._inside += 1
            self.overlaps += self._inside > 1
        try:
            time.sleep(0.0002)
            return getattr(self._conn, name)(*args)
        finally:
            with self._count:
                self._inside -= 1

    def recv_into(self, buffer: Any) -> int:
        return int(self._call("recv_into", buffer))

    def send(self, data: Any) -> int:
        return int(self._call("send", data))


def test_a_tls_lane_read_on_one_thread_and_written_on_another_makes_one_ssl_call_at_a_time(
        certs: Certs) -> None:
    """The thread profile's lane (`lane_socket.SerialTls`): a reader thread takes frames while
    another thread writes, both at full speed, over real TLS; every byte arrives, and no two
    SSL calls ever run at once (OpenSSL forbids it)."""
    from runtime.protocol import frames, pb
    from runtime.worker.lane_socket import SerialTls

    worker_tls, host_tls = tls.read_pool_tls(certs.table(), "test")
    a, b = socket.socketpair()
    out: dict[str, Any] = {}

    def client() -> None:  # echoes every frame back
        conn = host_tls.client_context().wrap_socket(b, server_hostname=SERVER_NAME)
        with conn:
            for msg in frames.read_messages(conn, pb.LaneRequest.FromString, 1 << 20):
                conn.sendall(frames.encode(msg))

    echo = threading.Thread(target=client, daemon=True)
    echo.start()
    server = worker_tls.server_context().wrap_socket(a, server_side=True)
    watched = _Overlaps(server)
    lane = SerialTls(watched)  # type: ignore[arg-type]
    sent = [pb.LaneRequest(calls=[pb.LaneCall(call_id=i)]) for i in range(1, 401)]

    def read() -> None:
        got = []
        for msg in frames.read_messages(lane, pb.LaneRequest.FromString, 1 << 20):
            got.append(msg)
            if len(got) == len(sent):
                break
        out["got"] = got

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for msg in sent:
        lane.sendall(frames.encode(msg))
    reader.join(60)
    server.setblocking(True)
    server.sendall(frames.END)
    echo.join(10)
    server.close()
    assert out.get("got") == sent
    assert watched.overlaps == 0
