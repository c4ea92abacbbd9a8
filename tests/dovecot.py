"""A real, rootless Dovecot IMAP server on a loopback port, configured in a temp directory."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient

PASSWORD = "secret"  # every user of the throwaway server has this password
RUN_AS = "nobody"

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# A wrong password is answered at once, not after the default 2 s, and it delays no later
# login from loopback (Dovecot's auth penalty; every test logs in from there).
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:{dir}/mail/%u/Maildir
mail_privileged_group =
imap_max_line_length = 64k
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/mail/%u
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    auto = create
    special_use = \\Sent
  }}
  mailbox "Gesendete Elemente" {{
    special_use = \\Sent
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    user = {user}
    group = {group}
    mode = 0660
  }}
  unix_listener stats-writer {{
    user = {user}
    group = {group}
    mode = 0660
  }}
}}
"""


def available() -> bool:
    return shutil.which("dovecot") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Dovecot:
    """A running server: connect as any user name with PASSWORD."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(user, PASSWORD)
        return client

    def append(self, user: str, folder: str, messages: Iterable[bytes]) -> None:
        """Deliver messages with MULTIAPPEND, 500 per command."""
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            batch: list[bytes] = []
            for raw in messages:
                batch.append(raw)
                if len(batch) == 500:
                    client.multiappend(folder, batch)
                    batch = []
            if batch:
                client.multiappend(folder, batch)

    def reset_uidvalidity(self, user: str, folder: str) -> None:
        """Give a folder (not INBOX) a new UIDVALIDITY, keeping its messages, as a rebuild does."""
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            bodies = [d[b"BODY[]"] for d in client.fetch(uids, ["BODY.PEEK[]"]).values()]
            client.unselect_folder()
            client.rename_folder(folder, folder + "-old")
            client.create_folder(folder)
            if bodies:
                client.multiappend(folder, bodies)
            client.delete_folder(folder + "-old")

    def mail_dir(self, user: str) -> Path:
        return self.directory / "mail" / user / "Maildir"


@contextmanager
def run_dovecot(directory: Path) -> Iterator[Dovecot]:
    """Start Dovecot as an unprivileged user (root only drops to it), wait until it answers."""
    account = pwd.getpwnam(RUN_AS)
    port = _free_port()
    for sub in ("run", "state", "mail"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config = directory / "dovecot.conf"
    config.write_text(
        CONFIG.format(
            dir=directory,
            user=RUN_AS,
            group="nogroup",
            uid=account.pw_uid,
            gid=account.pw_gid,
            port=port,
            password=PASSWORD,
        )
    )
    command = ["dovecot", "-F", "-c", str(config)]
    if os.geteuid() == 0:
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        command = ["setpriv", f"--reuid={RUN_AS}", "--regid=nogroup", "--clear-groups", *command]
    with (directory / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for(port, process, directory)
        yield Dovecot(directory, port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(port: int, process: subprocess.Popen[bytes], directory: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logs = [directory / "stderr.log", directory / "dovecot.log"]
            said = " ".join(p.read_text(errors="replace") for p in logs if p.exists())
            raise RuntimeError(f"dovecot exited: {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("dovecot did not answer within 20 s")
