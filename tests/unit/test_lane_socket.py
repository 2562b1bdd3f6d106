"""The worker's lane listener on TCP (`runtime.worker.lane_socket`): what it does with a
connection before any call, in this process (no calls are served, so no servicer)."""

from __future__ import annotations

import socket
import time

import pytest

from runtime.protocol import secret
from runtime.worker.lane_socket import LaneSocket


def test_a_client_that_drips_its_hello_is_cut_off_at_the_hellos_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each read of the hello (and of a TLS handshake) times out after HELLO_TIMEOUT_S, but a
    # client sending a byte now and then, each in time, held one of the worker's few lane
    # threads for as long as it liked (a hello may announce 64 KiB): the whole hello has
    # one deadline
    monkeypatch.setattr(secret, "HELLO_TIMEOUT_S", 0.5)
    lane = LaneSocket("tcp:127.0.0.1:0", servicer=None, limit=1 << 20, secret="s3cret")
    try:
        host, _, port = lane.address[4:].rpartition(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(secret.HELLO + (65535).to_bytes(2, "big"))  # then a 64 KiB secret
            cut = False
            for _ in range(300):  # a byte every 0.1 s: each read in time; 30 s in all
                time.sleep(0.1)
                try:
                    conn.sendall(b"x")
                    conn.setblocking(False)
                    try:
                        cut = conn.recv(1) == b""
                    except BlockingIOError:
                        pass
                    finally:
                        conn.setblocking(True)
                except OSError:  # reset: cut off
                    cut = True
                if cut:
                    break
            assert cut, "the worker still reads a hello dripped for 30 s"
    finally:
        lane.close(1.0)
