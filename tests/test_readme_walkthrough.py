"""README.md's walk-through, run as written, so the README cannot drift from the real thing.

The relay is started with the README's own command (``./scripts/relay``, on a free port, data in
a temporary directory); every line of the walk-through's code block then runs as a real ``vox``
process (``~/`` is a temporary home, the README's URL is the test relay's), from the top of the
checkout as the README says. ``vox chat`` runs in a real pseudo-terminal: a message is typed and
sent, then Ctrl+Q quits. ``vox link`` runs in the background while the ``join`` shown in its
README comment runs with the code it printed. A small model of who should receive what checks
each command's output: equal safety numbers on both sides, texts and files arriving (identical
bytes, under the documented downloads directory), group ids and members, device counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clients.sdk.message_rules import parse_duration
from clients.units import format_size, timer_notice
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Walk-through: two people chat with the `vox` client"
VOX = Path(sys.executable).with_name("vox")
README_URL = "http://127.0.0.1:8000"  # what ./scripts/relay serves by default
TIMEOUT = 60.0  # per command: generous, for a loaded 2-core machine
TUI_TEXT = "see you at the station"  # what we type into `vox chat`
HEX_ID = re.compile(r"[0-9a-f]{32}")
SAFETY = re.compile(r"safety number with (\S+):\n  ((?:\d{5} ){11}\d{5})\nstatus: (.+)")
REQUIRED_STEPS = {
    "register",
    "verify",
    "chat",
    "send",
    "receive",
    "send-file",
    "group create",
    "group send",
    "group remove",
    "link",
    "devices",
    "edit",
    "react",
    "disappear",
    "search",
    "history",
    "unlink",
}
ASSIGN = re.compile(r"^([A-Z_]+)=\$\((vox .*)\)(\s+#.*)?$")


# --- the README ---------------------------------------------------------------------------


def read_walkthrough() -> tuple[str, list[str]]:
    """The relay command (inline code in the section's prose) and the block's command lines."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    prose, _, rest = section.partition("```sh\n")
    assert rest, "the walk-through has no ```sh block"
    block = rest.split("```", 1)[0]
    relay = re.search(r"`(\./scripts/relay[^`]*)`", prose)
    assert relay is not None, "the walk-through does not say how to start the relay"
    top = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert f"./scripts/relay     # start a relay on {README_URL}" in top
    lines = [line for line in block.splitlines() if shlex.split(line, comments=True)]
    return relay.group(1), lines


# --- the relay, started as the README says --------------------------------------------------


def bootstrap_is_current() -> bool:
    """Whether scripts/bootstrap.sh would only check its stamp (no venv creation, no pip)."""
    venv = ROOT / ".venv"
    stamp = venv / ".vox-installed"
    if Path(sys.prefix).resolve() != venv.resolve() or not stamp.is_file():
        return False
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()
    ).hexdigest()
    return stamp.read_text().strip() == want


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without inherited VOX_* settings (they would change relay or client)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOX_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def readme_relay(command: str, workdir: Path) -> Iterator[str]:
    """Run the README's relay command on a free port with cwd ``workdir`` (so ./vox-data is
    there); yields its URL once it answers; SIGTERM at the end, which must exit 0."""
    port = free_port()
    argv = shlex.split(command)
    if bootstrap_is_current():
        cmd = [str((ROOT / argv[0]).resolve()), *argv[1:], "--port", str(port)]
    else:
        # Here scripts/bootstrap.sh would create .venv or pip-install (the tests do not run in
        # the checkout's current .venv): too slow and not ours to do under a test. Start what
        # the script finally execs, the same way.
        cmd = [str(VOX.with_name("vox-relay")), "serve", *argv[1:], "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    log = workdir / "relay.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the relay exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the relay never answered:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM is a clean stop too.
    text = log.read_text()
    assert code in (0, -signal.SIGTERM), f"the relay did not stop on SIGTERM ({code}):\n{text}"
    assert "Application shutdown complete." in text and "Traceback" not in text, text
    assert (workdir / "vox-data").is_dir()  # its default data directory, in its cwd


# --- a pseudo-terminal --------------------------------------------------------------------


class Terminal:
    """The master side of a pty: everything the child drew, read as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.out = b""

    def _read(self, within: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], within)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # the child closed the terminal
            return False
        self.out += chunk
        return bool(chunk)

    def wait_for(self, needles: list[str], *, since: int = 0, within: float = TIMEOUT) -> None:
        """Until every needle was drawn after byte ``since``."""
        wanted = [n.encode() for n in needles]
        deadline = time.monotonic() + within
        while not all(n in self.out[since:] for n in wanted):
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.2)):
                raise AssertionError(f"the terminal never showed {needles}: {self.out[-3000:]!r}")

    def drain_until_exit(self, proc: subprocess.Popen[bytes], within: float) -> int:
        """Keep reading (so the child never blocks on a full terminal) until it exits."""
        deadline = time.monotonic() + within
        while proc.poll() is None and time.monotonic() < deadline:
            if not self._read(0.2):
                break
        return proc.wait(max(1.0, deadline - time.monotonic()))


# --- the walk ---------------------------------------------------------------------------------


@dataclass
class Walk:
    """Runs walk-through lines and checks their output against who should have received what."""

    home: Path  # what ~ stands for
    url: str
    users: dict[str, str] = field(default_factory=dict)  # profile (dir under ~) -> username
    inbox: dict[str, list[str]] = field(default_factory=dict)  # profile -> lines due (regex)
    files: dict[str, list[Path]] = field(default_factory=dict)  # profile -> files due
    never: dict[str, list[str]] = field(default_factory=dict)  # profile -> texts not for it
    groups: dict[str, set[str]] = field(default_factory=dict)  # name -> members
    numbers: dict[frozenset[str], list[str]] = field(default_factory=dict)  # pair -> shown
    steps: set[str] = field(default_factory=set)
    removed: tuple[str, str, str] | None = None  # (profile that removed, group, user)
    joined: str | None = None  # the profile made by `join`
    variables: dict[str, str] = field(default_factory=dict)  # NAME=$(vox ...) in the README
    notices: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # history rows due
    other_device: str | None = None  # a device id other than the current one (`devices`)
    unlinked: str | None = None  # the profile of the device removed by `unlink`
    last_out: str = ""

    @property
    def env(self) -> dict[str, str]:
        return clean_env(HOME=str(self.home))

    def argv(self, tokens: list[str]) -> list[str]:
        """README tokens with ~/ and the README's URL replaced; `vox` is the venv's."""
        out = []
        for t in tokens:
            if t.startswith("~/"):
                t = str(self.home / t[2:])
            out.append(self.url if t == README_URL else t)
        assert out[0] == "vox", tokens
        return [str(VOX), *out[1:]]

    def run(self, line: str, argv: list[str]) -> str:
        r = subprocess.run(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert r.returncode == 0, f"{line}\nexit {r.returncode}\n{r.stdout}{r.stderr}"
        assert "Traceback" not in r.stderr, f"{line}\n{r.stderr}"
        self.last_out = r.stdout
        return r.stdout

    def profiles_of(self, username: str) -> list[str]:
        return [p for p, u in self.users.items() if u == username]

    def deliver(self, username: str, sender: str, text: str, group: str | None = None) -> None:
        """``receive`` on each of ``username``'s devices will print ``text`` from ``sender``."""
        where = rf" \[group {re.escape(group)} \([0-9a-f]{{8}}\)\]" if group else ""
        said = f"{re.escape(sender)}:\\d+{where}: {re.escape(text)}"
        line = rf"^[0-9a-f]{{32}}  \d\d:\d\d:\d\d  {said}$"
        for p in self.profiles_of(username):
            self.inbox.setdefault(p, []).append(line)

    def step(self, line: str) -> None:
        """Run one line of the walk-through and check what it printed (``NAME=$(vox ...)``
        keeps the output for ``"$NAME"`` in later lines)."""
        assign = ASSIGN.match(line)
        if assign is not None:
            self.step(assign.group(2))
            self.variables[assign.group(1)] = self.last_out.strip()
            return
        for name, value in self.variables.items():
            line = line.replace(f'"${name}"', value)
        tokens = shlex.split(line, comments=True)
        assert tokens[:2] == ["vox", "--home"] and tokens[2].startswith("~/"), line
        profile = tokens[2][2:]
        sub = " ".join(tokens[3:5]) if tokens[3] == "group" else tokens[3]
        args = tokens[5:] if tokens[3] == "group" else tokens[4:]
        self.steps.add(sub)
        argv = self.argv(tokens)
        me = self.users.get(profile, "")
        if sub == "register":
            out = self.run(line, argv)
            assert out.strip() == f"registered {args[0]} (device 1) on {self.url}", out
            self.users[profile] = args[0]
        elif sub == "verify":
            self.verify(line, argv, me, args)
        elif sub == "chat":
            self.chat(line, argv, args[0])
            self.deliver(args[0], me, TUI_TEXT)
        elif sub == "send":
            assert HEX_ID.fullmatch(self.run(line, argv).strip()), line
            self.deliver(args[0], me, args[1])
        elif sub == "send-file":
            assert HEX_ID.fullmatch(self.run(line, argv).strip()), line
            for p in self.profiles_of(args[0]):
                self.files.setdefault(p, []).append(ROOT / args[1])
        elif sub == "receive":
            self.receive(line, argv, profile)
        elif sub == "group create":
            assert HEX_ID.fullmatch(self.run(line, argv).strip()), line
            self.groups[args[0]] = {me, *args[1:]}
        elif sub == "group send":
            assert HEX_ID.fullmatch(self.run(line, argv).strip()), line
            for user in self.users.values():
                if user != me and user not in self.groups[args[0]]:
                    for p in self.profiles_of(user):
                        self.never.setdefault(p, []).append(args[1])
            for user in self.groups[args[0]] - {me}:
                self.deliver(user, me, args[1], group=args[0])
        elif sub == "group remove":
            out = self.run(line, argv)
            self.groups[args[0]] -= set(args[1:])
            assert set(out.split()) == self.groups[args[0]], out
            self.removed = (profile, args[0], args[1])
        elif sub == "link":
            self.link(line, argv, me)
        elif sub in ("edit", "react"):
            assert HEX_ID.fullmatch(self.run(line, argv).strip()), line
            target = re.escape(args[1])
            done = f"edited {target}: {re.escape(args[2])}" if sub == "edit" else (
                f"reacted {re.escape(args[2])} to {target}")  # fmt: skip
            for p in self.profiles_of(args[0]):
                self.inbox.setdefault(p, []).append(rf"^\d\d:\d\d:\d\d {me}:\d+ {done}$")
        elif sub == "disappear":
            seconds = parse_duration(args[1])
            assert self.run(line, argv).strip() == timer_notice("you", seconds), line
            notice = timer_notice(me, seconds)
            for p in self.profiles_of(args[0]):
                told = re.escape(notice.removeprefix(me))  # " set disappearing messages to ..."
                self.inbox.setdefault(p, []).append(rf"^\d\d:\d\d:\d\d {me}:\d+{told}$")
            # a row of the conversation's history on every device of both sides
            for user, peer in ((me, args[0]), (args[0], me)):
                for p in self.profiles_of(user):
                    self.notices.setdefault((p, peer), []).append(notice)
        elif sub == "history":
            rows = self.run(line, argv).strip().splitlines()
            assert rows and all(HEX_ID.match(r) for r in rows), rows
            for notice in self.notices.get((profile, args[0]), []):
                assert any(r.endswith(f"  {notice}") for r in rows), (notice, rows)
        elif sub == "search":
            found = self.run(line, argv).strip().splitlines()
            assert found and all(args[0].lower() in f.lower() for f in found), found
            assert all(HEX_ID.search(f) for f in found), found
        elif sub == "devices":
            listed = self.run(line, argv).strip().splitlines()
            assert len(listed) == len(self.profiles_of(me)), listed
            assert sum("(this device)" in d for d in listed) == 1, listed
            others = [d.split()[0] for d in listed if "(this device)" not in d]
            self.other_device = others[0] if others else None
        elif sub == "unlink":
            # `ID` in the README: the other device's number from the `devices` list before.
            assert args == ["ID"] and self.joined is not None, line
            device = self.other_device
            assert device is not None, "the walk-through unlinks before listing the devices"
            argv = [device if a == "ID" else a for a in argv]
            assert self.run(line, argv).strip() == f"removed device {device}", line
            self.unlinked = self.joined
            del self.users[self.joined]
        else:
            raise AssertionError(f"a walk-through step this test does not know: {line}")

    def verify(self, line: str, argv: list[str], me: str, args: list[str]) -> None:
        out = self.run(line, argv).strip()
        m = SAFETY.fullmatch(out)
        assert m is not None and m.group(1) == args[0], out
        shown = self.numbers.setdefault(frozenset({me, args[0]}), [])
        shown.append(m.group(2))
        assert len(set(shown)) == 1, f"the two sides show different safety numbers: {shown}"
        if "--accept" in args:
            assert m.group(3) == "verified", out
        else:
            assert m.group(3) in ("trusted on first use", "verified"), out

    def receive(self, line: str, argv: list[str], profile: str) -> None:
        out = self.run(line, argv)
        for due in self.inbox.pop(profile, []):
            assert re.search(due, out, re.M), f"{line}: nothing like {due!r} arrived:\n{out}"
        for text in self.never.pop(profile, []):
            assert text not in out, f"{line}: {text!r} should not have arrived:\n{out}"
        for source in self.files.pop(profile, []):
            size = format_size(source.stat().st_size)  # the file's own size, binary units
            m = re.search(
                rf"\[file\] {re.escape(source.name)} \({re.escape(size)}\) -> (.+)$", out, re.M
            )
            assert m is not None, f"{line}: {source.name} did not arrive:\n{out}"
            saved = Path(m.group(1))
            assert saved == self.home / profile / "downloads" / source.name, saved
            assert saved.read_bytes() == source.read_bytes()

    def chat(self, line: str, argv: list[str], peer: str) -> None:
        """`vox chat PEER` in a pseudo-terminal: type a message, Enter, see it sent, Ctrl+Q."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
        os.close(slave)
        term = Terminal(master)
        try:
            # An empty conversation says so; it is drawn only after the input box got the focus.
            term.wait_for(["No", "messages", "with", peer, "yet"])
            since = len(term.out)
            os.write(master, TUI_TEXT.encode() + b"\r")
            term.wait_for(["station", "✓"], since=since)  # shown, accepted by the relay
            os.write(master, b"\x11")  # Ctrl+Q
            code = term.drain_until_exit(proc, TIMEOUT)
            assert code == 0, f"{line}: exit {code}: {term.out[-3000:]!r}"
            assert b"Traceback" not in term.out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)

    def link(self, line: str, argv: list[str], me: str) -> None:
        """`vox link` in the background; the `join` of its README comment with the code shown."""
        comment = line.split("#", 1)[1]
        m = re.search(r"(vox .*\bjoin CODE --server URL)", comment)
        assert m is not None, f"the link step does not show the join command: {line}"
        join = shlex.split(m.group(1))
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            shown = b""
            deadline = time.monotonic() + TIMEOUT
            while b"\n" not in shown and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.2)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    shown += chunk
            first = shown.decode().splitlines()[0] if shown else ""
            printed = re.fullmatch(r"on the new device run:  vox join (\S+) --server (\S+)", first)
            assert printed is not None, f"{line}: printed {shown!r}"
            assert printed.group(2) == self.url
            join = [{"CODE": printed.group(1), "URL": self.url}.get(t, t) for t in join]
            profile = join[2][2:]
            out = self.run(m.group(1), self.argv(join))
            joined = re.fullmatch(rf"joined as {me} device (\d+)", out.strip())
            assert joined is not None, out
            rest, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, f"{line}: exit {proc.returncode}: {err.decode()}"
            assert f"linked device {joined.group(1)}" in (shown + rest).decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.users[profile] = me
        self.joined = profile


# A dozen `vox` processes, a relay and a pty session: minutes on a loaded 2-core machine.
@pytest.mark.timeout(600)
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    relay_command, lines = read_walkthrough()
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "relay").mkdir()
    with readme_relay(relay_command, tmp_path / "relay") as url:
        walk = Walk(home, url)
        for line in lines:
            walk.step(line)
        assert walk.steps >= REQUIRED_STEPS, f"the walk-through lost {REQUIRED_STEPS - walk.steps}"
        assert any(len(shown) >= 2 for shown in walk.numbers.values()), "no two sides compared"
        assert len(walk.users) >= 3 and walk.joined is not None and walk.unlinked is not None

        # What the comments promise beyond each line's own output: a removed member reads no
        # more of the group (the others still do), and the unlinked laptop is cut off.
        assert walk.removed is not None
        by, group, gone = walk.removed
        walk.step(f'vox --home ~/{by} group send {group} "{gone} cannot read this"')
        readers = {gone, *walk.groups[group]} - {walk.users[by]}
        for profile in sorted(p for user in readers for p in walk.profiles_of(user)):
            walk.step(f"vox --home ~/{profile} receive --wait 1")
        laptop = subprocess.run(
            [str(VOX), "--home", str(home / walk.unlinked), "receive", "--wait", "1"],
            cwd=ROOT, env=walk.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert laptop.returncode == 1 and "removed from the account" in laptop.stderr, laptop
        assert "Traceback" not in laptop.stderr
