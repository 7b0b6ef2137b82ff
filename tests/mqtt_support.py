"""A real mosquitto on 127.0.0.1 for the MQTT tests: password file + the example ACL."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
ACL = Path(__file__).resolve().parent.parent / "examples" / "mosquitto" / "acl"
USERS = {"unison-server": "server-pw", "game": "game-pw", "viewer": "viewer-pw"}

needs_mosquitto = pytest.mark.skipif(
    not (Path(MOSQUITTO).exists() and Path(MOSQUITTO_PASSWD).exists()),
    reason="the mosquitto broker is not installed (Debian: apt-get install mosquitto)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    port: int
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def mosquitto(tmp: Path) -> Iterator[Broker]:
    """mosquitto -c <conf>: 127.0.0.1:<free port>, no anonymous, passwords, the example ACL."""
    passwd = tmp / "passwd"
    passwd.touch(mode=0o600)
    for user, pw in USERS.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, pw], check=True)
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"acl_file {ACL}\npersistence false\n" + ("user root\n" if os.geteuid() == 0 else "")
        # as root, mosquitto drops to user 'mosquitto', who cannot read pytest's private tmp
    )
    broker = Broker(port, conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
