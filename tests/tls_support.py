"""Certificates for the TLS tests, made with the ``openssl`` command (pit does not depend on
``cryptography``): a CA, a worker certificate it issued for the name SERVER_NAME only (not
for an IP address: the host must be told the name), and a second CA that issued nothing the
worker serves."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_NAME = "pit-worker.test"
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path

    def table(self) -> dict[str, str]:
        """A pool's ``tls`` table for them."""
        return {"cert": str(self.cert), "key": str(self.key), "ca": str(self.ca),
                "server_name": SERVER_NAME}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_certs(folder: Path) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the TLS tests' certificates")
    ca, ca_key = _ca(folder, "ca")
    other_ca, _ = _ca(folder, "other-ca")
    key, csr, cert = folder / "worker.key", folder / "worker.csr", folder / "worker.pem"
    _openssl("req", *EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={SERVER_NAME}")
    ext = folder / "worker.ext"
    ext.write_text(f"subjectAltName=DNS:{SERVER_NAME}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    key.chmod(0o600)
    return Certs(ca=ca, cert=cert, key=key, other_ca=other_ca)
