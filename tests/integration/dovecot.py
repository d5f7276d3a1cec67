"""A throwaway Dovecot 2.3 (IMAP + LMTP, optionally IMAPS) on loopback, and pytest fixtures.

Follows ``recipes/dovecot-test-server.md``. One server per test session; tests
isolate themselves by using a unique user each (a catch-all passdb lets any
user name log in with the password :data:`PASSWORD`, and every new name gets an
empty mailbox).

``tests/conftest.py`` registers this module as a plugin
(``pytest_plugins = ["tests.integration.dovecot", ...]``), so any test can ask
for the fixtures::

    from tests.integration.dovecot import Dovecot

    def test_something(dovecot: Dovecot, imap_user: str) -> None:
        dovecot.deliver(imap_user, b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        assert dovecot.count(imap_user, "INBOX") == 1

Being a plugin, the session fixture exists once, so every module shares the same
server; importing the fixture functions into a module instead would start one
server per importing module. PYTEST_DONT_REWRITE (this marker) stops pytest
warning -- an error under ``filterwarnings = error`` -- when a module imports
this one before it is registered as a plugin.

When ``dovecot`` is not installed the fixtures skip, or fail if
``MAILD_REQUIRE_SERVERS=1`` or ``CI`` is set: in CI a missing server is an error.
"""

from __future__ import annotations

import grp
import imaplib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

__all__ = ["PASSWORD", "Dovecot", "DovecotError", "dovecot", "imap_user", "require_dovecot"]

PASSWORD = "secret"
HOST = "127.0.0.1"
INSTALL_HINT = "apt-get install dovecot-core dovecot-imapd dovecot-lmtpd"

CONFIG = """\
# Self-contained Dovecot 2.3 config for tests. Nothing under /etc/dovecot is read.
base_dir = @ROOT@/run
state_dir = @ROOT@/state
instance_name = @NAME@
log_path = @ROOT@/dovecot.log
info_log_path = @ROOT@/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
@SSL@
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
mail_location = maildir:@ROOT@/mail/%u
default_internal_user = @INTERNAL_USER@
default_login_user = @LOGIN_USER@
default_internal_group = @INTERNAL_GROUP@
first_valid_uid = 1
first_valid_gid = 1

passdb {
  driver = static
  args = password=@PASSWORD@
}
userdb {
  driver = static
  args = uid=@MAIL_UID@ gid=@MAIL_GID@ home=@ROOT@/home/%u allow_all_users=yes
}

service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = @IMAP_PORT@
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = @IMAPS_PORT@
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = @LMTP_PORT@
  }
}
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service ipc {
  chroot =
}
service old-stats {
  chroot =
}
service aggregator {
  chroot =
}
service imap-urlauth-login {
  chroot =
}

namespace inbox {
  inbox = yes
  separator = /
}
"""

_counter = itertools.count(1)


class DovecotError(RuntimeError):
    """Dovecot could not be configured or started, or a doveadm command failed."""


# where distributions put Dovecot's service binaries (Debian: /usr/lib/dovecot)
LIBEXEC_DIRS = (Path("/usr/lib/dovecot"), Path("/usr/libexec/dovecot"))
# each needed program and the Debian package that has it
NEEDED = {"imap": "dovecot-imapd", "lmtp": "dovecot-lmtpd"}


def missing_dovecot_parts() -> list[str]:
    """What of Dovecot is not installed, each with the package that brings it."""
    missing = [
        f"{name} (dovecot-core)" for name in ("dovecot", "doveadm") if shutil.which(name) is None
    ]
    # dovecot-core alone starts, then every IMAP or LMTP connection fails
    for name, package in NEEDED.items():
        if not any((d / name).is_file() for d in LIBEXEC_DIRS):
            missing.append(f"{LIBEXEC_DIRS[0] / name} ({package})")
    return missing


def require_dovecot() -> None:
    """Skip the calling test when Dovecot is missing; fail instead in CI."""
    missing = missing_dovecot_parts()
    if not missing:
        return
    message = f"Dovecot is not fully installed, missing {', '.join(missing)}: {INSTALL_HINT}"
    if os.environ.get("MAILD_REQUIRE_SERVERS") == "1" or os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (all sockets held open until all are read)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Dovecot:
    """One Dovecot instance in a short temp dir under /tmp.

    Ports stay the same across :meth:`stop`/:meth:`start`, so a client can
    reconnect to a restarted server. ``tls=True`` also opens an IMAPS port with
    a fresh self-signed certificate for ``localhost``/``127.0.0.1``
    (:attr:`cert_path`) and allows STARTTLS on the plain port.
    """

    def __init__(self, *, tls: bool = False) -> None:
        self.name = f"mdt{os.getpid()}x{next(_counter)}"
        self.root = Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))
        self.root.chmod(0o755)  # the auth process (user dovecot) must traverse it
        self.conf = self.root / "dovecot.conf"
        self.host = HOST
        self.password = PASSWORD
        self.tls = tls
        self.imap_port, self.lmtp_port, self.imaps_port = free_ports(3)
        if not tls:
            self.imaps_port = 0
        self.cert_path: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._write_config()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _write_config(self) -> None:
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir()
        if os.geteuid() == 0:
            internal, login, group = "dovecot", "dovenull", "dovecot"
            mail_uid = mail_gid = 65534
            for sub in ("mail", "home"):
                os.chown(self.root / sub, mail_uid, mail_gid)
        else:
            me = pwd.getpwuid(os.getuid())
            internal = login = me.pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            mail_uid, mail_gid = os.getuid(), os.getgid()
        ssl = "ssl = no"
        if self.tls:
            self.cert_path = self.root / "cert.pem"
            key = self.root / "key.pem"
            _self_signed_cert(self.cert_path, key)
            ssl = f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{key}"
        text = CONFIG
        for placeholder, value in {
            "@ROOT@": str(self.root),
            "@NAME@": self.name,
            "@SSL@": ssl,
            "@PASSWORD@": PASSWORD,
            "@INTERNAL_USER@": internal,
            "@LOGIN_USER@": login,
            "@INTERNAL_GROUP@": group,
            "@MAIL_UID@": str(mail_uid),
            "@MAIL_GID@": str(mail_gid),
            "@IMAP_PORT@": str(self.imap_port),
            "@IMAPS_PORT@": str(self.imaps_port),
            "@LMTP_PORT@": str(self.lmtp_port),
        }.items():
            text = text.replace(placeholder, value)
        self.conf.write_text(text)
        check = subprocess.run(["doveconf", "-n", "-c", str(self.conf)], capture_output=True)
        if check.returncode != 0:
            raise DovecotError(f"bad dovecot config: {check.stderr.decode(errors='replace')}")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the master and wait for the IMAP and LMTP greetings."""
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        pending = {self.imap_port: b"* OK", self.lmtp_port: b"220 "}
        if self.imaps_port:
            pending[self.imaps_port] = b""  # TLS: a connect is all we can check cheaply
        while pending:
            if self.proc.poll() is not None:
                self._fail_start("dovecot exited during startup")
            if time.monotonic() > deadline:
                self._fail_start(f"no greeting within {timeout}s")
            for port, greeting in list(pending.items()):
                if _greets(port, greeting):
                    del pending[port]
            if pending:
                time.sleep(0.02)

    def _fail_start(self, why: str) -> None:
        out = b""
        if self.proc is not None and self.proc.poll() is not None and self.proc.stdout:
            out = self.proc.stdout.read()
        self.stop()
        log = self.root / "dovecot.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        output = out.decode(errors="replace")
        raise DovecotError(f"{why}\n--- output ---\n{output}\n--- log ---\n{tail}")

    def stop(self) -> None:
        """Disconnect every client, stop the master, sweep leftover processes (about 1.1 s)."""
        if self.proc is not None and self.proc.poll() is None:
            # the master does not disconnect logged-in sessions when it stops
            self.doveadm("kick", "*", check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        self._sweep()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _sweep(self) -> None:
        """Kill processes of this instance only (process titles start with ``dovecot-NAME/``)."""
        prefix = f"dovecot-{self.name}/".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(prefix):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- doveadm -----------------------------------------------------------------------------

    def doveadm(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``doveadm -c CONF ARGS``; raise :class:`DovecotError` on failure if ``check``."""
        result = subprocess.run(
            ["doveadm", "-c", str(self.conf), *args], input=input, capture_output=True, timeout=30
        )
        if check and result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    def deliver(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        """Store one message in ``folder`` (created if missing) with ``doveadm save``; ~7 ms."""
        if folder != "INBOX" and not self.exists(user, folder):
            self.create_folder(user, folder)
        self.doveadm("save", "-u", user, "-m", folder, input=raw)

    def deliver_many(self, user: str, raws: Iterable[bytes], folder: str = "INBOX") -> None:
        """APPEND many messages over one IMAP connection (about 1 ms each)."""
        if folder != "INBOX" and not self.exists(user, folder):
            self.create_folder(user, folder)
        mailbox = self.doveadm("mailbox", "mutf7", folder).stdout.decode().strip()
        quoted = '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
        with imaplib.IMAP4(self.host, self.imap_port, timeout=30) as imap:
            imap.login(user, self.password)
            for raw in raws:
                typ, data = imap.append(quoted, None, None, raw)
                if typ != "OK":
                    raise DovecotError(f"APPEND to {folder} failed: {data!r}")
            imap.logout()

    def kick(self, user: str) -> None:
        """Disconnect every IMAP session of ``user`` (they get ``* BYE`` then EOF)."""
        self.doveadm("kick", user, check=False)  # exits 68 when nobody was connected

    def create_folder(self, user: str, folder: str) -> None:
        self.doveadm("mailbox", "create", "-u", user, folder)

    def delete_folder(self, user: str, folder: str) -> None:
        self.doveadm("mailbox", "delete", "-u", user, folder)

    def folders(self, user: str) -> list[str]:
        out = self.doveadm("mailbox", "list", "-u", user).stdout.decode()
        return [line for line in out.splitlines() if line]

    def exists(self, user: str, folder: str) -> bool:
        return folder in self.folders(user)

    def _fetch(self, user: str, folder: str, fields: str) -> list[dict[str, str]]:
        if folder != "INBOX" and not self.exists(user, folder):
            return []
        out = self.doveadm(
            "-f", "tab", "fetch", "-u", user, fields, "mailbox", folder, "all"
        ).stdout.decode()
        lines = out.splitlines()
        if not lines:
            return []
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]

    def folder_uids(self, user: str, folder: str = "INBOX") -> list[int]:
        """UIDs in ``folder``, ascending; ``[]`` when the folder does not exist."""
        return sorted(int(row["uid"]) for row in self._fetch(user, folder, "uid"))

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags and keywords, e.g. ``{1: {"\\\\Seen", "$MaildProcessed"}}``."""
        return {
            int(row["uid"]): set(row.get("flags", "").split())
            for row in self._fetch(user, folder, "uid flags")
        }

    def subjects(self, user: str, folder: str = "INBOX") -> list[str]:
        """Subjects in ``folder`` in UID order."""
        rows = self._fetch(user, folder, "uid hdr.subject")
        rows.sort(key=lambda row: int(row["uid"]))
        return [row.get("hdr.subject", "").strip() for row in rows]

    def _status(self, user: str, folder: str, field: str) -> int:
        out = self.doveadm(
            "-f", "tab", "mailbox", "status", "-u", user, field, folder
        ).stdout.decode()
        header, values = out.splitlines()[:2]
        return int(dict(zip(header.split("\t"), values.split("\t"), strict=True))[field])

    def count(self, user: str, folder: str = "INBOX") -> int:
        """Messages in ``folder``; 0 when the folder does not exist."""
        if folder != "INBOX" and not self.exists(user, folder):
            return 0
        return self._status(user, folder, "messages")

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        return self._status(user, folder, "uidvalidity")


def _greets(port: int, greeting: bytes) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            if not greeting:
                return True
            return s.recv(64).startswith(greeting)
    except OSError:
        return False


def _self_signed_cert(cert: Path, key: Path) -> None:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot for the whole session (IMAPS too when ``openssl`` is available)."""
    require_dovecot()
    server = Dovecot(tls=shutil.which("openssl") is not None)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> str:
    """A user name no other test uses: a fresh, empty mailbox (password :data:`PASSWORD`)."""
    return f"u{next(_counter)}-{uuid.uuid4().hex[:8]}@example.test"
