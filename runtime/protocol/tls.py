"""TLS for a worker on a TCP port (a Ray-placed worker), under the pool's secret.

    host: `read_pool_tls` (the pool's ``tls`` files, read at each worker's launch)
          --> WorkerTls (certificate chain + key) --Ray: the actor's argument--> the actor
              --environment: PIT_WORKER_TLS_CERT, PIT_WORKER_TLS_KEY--> the worker (--tls)
          --> HostTls (CA + server_name): the host's gRPC channel and lane connection
    worker: `take_from_env` --> gRPC `server_credentials`; the lane: each accepted
            connection wrapped by `server_context` BEFORE the secret's hello is read

The key never appears on a command line or in a file another user could read: the worker
hands it to OpenSSL (which loads only from paths) through anonymous memory files (memfd; a
0600 file in a 0700 temporary directory, removed at once, where there is none). The host
verifies the worker's certificate against the pool's CA; the worker asks the host for none (the
secret proves the host). Certificates are issued for a name, not for a worker's address:
``server_name`` is the name the host checks them against (gRPC's
``grpc.ssl_target_name_override``, ssl's ``server_hostname``); without it, the worker's IP
address must be in its certificate.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENV_CERT = "PIT_WORKER_TLS_CERT"  # the worker's PEM certificate chain (removed at start)
ENV_KEY = "PIT_WORKER_TLS_KEY"  # its PEM private key (removed at start)
MIN_VERSION = ssl.TLSVersion.TLSv1_2
HANDSHAKE_STEPS = 10  # rounds of the check's in-memory handshake (TLS 1.2 needs 3, 1.3 2)
FILE_HINTS = {
    "cert": "the worker's certificate: a PEM file (-----BEGIN CERTIFICATE-----), its chain "
            "after it",
    "key": "the certificate's private key: an unencrypted PEM file (-----BEGIN PRIVATE "
           "KEY-----), readable only by you (chmod 600)",
    "ca": "the CA that issued the workers' certificates: a PEM file (-----BEGIN "
          "CERTIFICATE-----)",
}


@dataclass(frozen=True, slots=True)
class WorkerTls:
    """What a worker serves TLS with: its PEM certificate chain and private key."""

    cert: bytes
    key: bytes = field(repr=False)  # a repr goes to logs, tracebacks, test reports

    def env(self) -> dict[str, str]:
        """How the worker is given them (`take_from_env` takes them back out)."""
        return {ENV_CERT: self.cert.decode("utf-8", "surrogateescape"),
                ENV_KEY: self.key.decode("utf-8", "surrogateescape")}

    def server_credentials(self) -> Any:
        import grpc

        return grpc.ssl_server_credentials([(self.key, self.cert)])

    def server_context(self) -> ssl.SSLContext:
        """The lane's server side (`ssl.SSLContext.wrap_socket(conn, server_side=True)`)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = MIN_VERSION
        with _private_files(self.cert, self.key) as (cert, key):
            ctx.load_cert_chain(cert, key, password=_no_password)
        return ctx


@dataclass(frozen=True, slots=True)
class HostTls:
    """What the host verifies a worker with: the CA's PEM certificates and the name the
    worker's certificate must carry ("": the address the host connects to)."""

    ca: bytes
    server_name: str = ""

    def channel_credentials(self) -> Any:
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=self.ca)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name \
            else []

    def client_context(self) -> ssl.SSLContext:
        """The lane's client side: verifies the worker's certificate and name."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca.decode())
        ctx.minimum_version = MIN_VERSION
        return ctx

    def server_hostname(self, host: str) -> str:
        """The name the lane's certificate check expects of a worker at ``host``."""
        return self.server_name or host


def take_from_env(environ: dict[str, str] | None = None) -> WorkerTls | None:
    """The worker's certificate and key, removed from its environment so its tools'
    subprocesses do not inherit them (None when it was given neither)."""
    env = os.environ if environ is None else environ
    cert, key = env.pop(ENV_CERT, ""), env.pop(ENV_KEY, "")
    return WorkerTls(cert.encode("utf-8", "surrogateescape"),
                     key.encode("utf-8", "surrogateescape")) if cert and key else None


def read_pool_tls(table: Mapping[str, str], where: str) -> tuple[WorkerTls, HostTls]:
    """Read a pool's ``tls`` files (absolute paths, checked to exist by the config) and check
    that they hold what each must; ConfigError naming the key otherwise."""
    data = {}
    for key in FILE_HINTS:
        path = Path(table[key])
        try:
            data[key] = path.read_bytes()
        except OSError as exc:
            raise _bad(where, key, f"cannot be read: {exc.strerror or exc}") from None
        marker = b"PRIVATE KEY-----" if key == "key" else b"-----BEGIN CERTIFICATE-----"
        if marker not in data[key]:
            raise _bad(where, key, f"{path} is not a PEM file with {marker.decode()!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(table["cert"], table["key"], password=_no_password)
    except ValueError as exc:  # the key is encrypted
        raise _bad(where, "key", str(exc)) from None
    except ssl.SSLError as exc:
        raise _bad(where, "key", f"does not match tls.cert, or one of them cannot be read "
                                 f"({exc.reason or exc})") from None
    try:
        ssl.create_default_context(cadata=data["ca"].decode("ascii", "replace"))
    except ssl.SSLError as exc:
        raise _bad(where, "ca", f"holds no certificate OpenSSL can read ({exc.reason or exc})"
                   ) from None
    worker = WorkerTls(data["cert"], data["key"])
    host = HostTls(data["ca"], str(table.get("server_name", "")))
    refused = handshake_refusal(worker, host)
    if refused is not None:
        key = "server_name" if "hostname" in refused.lower() else "ca"
        what = (f"= {host.server_name!r} is not a name in tls.cert" if key == "server_name"
                else "did not issue tls.cert (or its chain is incomplete)")
        raise ConfigError(f"{where}: tls.{key} {what}: the host would refuse the workers "
                          f"({refused})", details={"key": f"tls.{key}"},
                          hint="set tls.server_name to a DNS name of the certificate (openssl "
                               "x509 -noout -ext subjectAltName -in CERT)" if key ==
                          "server_name" else "point tls.ca at the CA that issued tls.cert, "
                                             "and put any intermediate CA after it in tls.cert")
    return worker, host


def handshake_refusal(worker: WorkerTls, host: HostTls) -> str | None:
    """Why a host with ``host`` would refuse a worker serving ``worker`` (None: it would
    not), from a TLS handshake in memory. Without a server_name the name the host checks is
    the worker's address, unknown here: only the CA is checked then."""
    client_ctx = host.client_context()
    if not host.server_name:
        client_ctx.check_hostname = False
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=host.server_name or None)
    server = worker.server_context().wrap_bio(bios[2], bios[3], server_side=True)
    ends = ((client, bios[1], bios[2]), (server, bios[3], bios[0]))
    done: set[int] = set()
    for _ in range(HANDSHAKE_STEPS):
        for i, (end, out, peer_in) in enumerate(ends):
            try:
                end.do_handshake()
                done.add(i)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                return str(exc.verify_message or exc.reason or exc)
            except ssl.SSLError as exc:
                return str(exc.reason or exc)
            peer_in.write(out.read())
        if len(done) == 2:
            return None
    return "the TLS handshake did not complete"


def _bad(where: str, key: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: tls.{key} {what}", details={"key": f"tls.{key}"},
                       hint=f"tls.{key} must be {FILE_HINTS[key]}")


def _no_password() -> str:
    raise ValueError("is an encrypted key: a worker cannot be asked for its passphrase "
                     "(decrypt it: openssl pkey -in KEY -out PLAIN_KEY; chmod 600 PLAIN_KEY)")


@contextlib.contextmanager
def _private_files(*contents: bytes) -> Iterator[list[str]]:
    """Paths OpenSSL can read ``contents`` from, that no other user can, gone afterwards."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("pit-tls") for _ in contents]  # close-on-exec
        try:
            for fd, data in zip(fds, contents, strict=True):
                with open(fd, "wb", closefd=False) as fh:
                    fh.write(data)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    import tempfile  # here: it imports shutil, bz2, lzma, which a worker otherwise never needs

    with tempfile.TemporaryDirectory(prefix="pit-tls-") as folder:  # 0700
        paths = []
        for i, data in enumerate(contents):
            path = os.path.join(folder, str(i))
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(data)
            paths.append(path)
        yield paths
