"""`make test` uses the browser that is there and installs one only where it may (issue 13, item 7:
"`make test` runs `sudo apt-get install chromium` even when a browser is there or apt is absent.
Use the browser that is there; where none can be installed, say how to get one and fail clearly").

`.ci/find-browser` and `.ci/install-browser` run for real, with a PATH holding only scripts that
stand in for browsers, `apt-get`, `sudo` and `id` (and the few tools the scripts need), so
nothing here can find or install the machine's own browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.process import ROOT

FIND = ROOT / ".ci" / "find-browser"
INSTALL = ROOT / ".ci" / "install-browser"
TOOLS = ("bash", "env", "dirname", "timeout", "cat", "chmod", "true")
CHROMIUM = '#!/bin/sh\necho "Chromium 120.0.6099.224 built on Debian GNU/Linux 12 (bookworm)"\n'
SNAP_STUB = '#!/bin/sh\necho "Command \'/usr/bin/chromium-browser\' requires the chromium snap to be installed."\n'


class FakeMachine:
    """A PATH of stand-in scripts, and a log of what apt-get and sudo were asked to do."""

    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "bin"
        self.tools = tmp / "tools"
        self.bin.mkdir()
        self.tools.mkdir()
        self.log = tmp / "calls.log"
        self.log.touch()
        for tool in TOOLS:
            (self.tools / tool).symlink_to(shutil.which(tool))
        self.env = {"PATH": f"{self.bin}:{self.tools}", "HOME": str(tmp), "JITGATE_BROWSER_PLACES": ""}
        self.uid(1000)

    def script(self, name: str, text: str, where: Path | None = None) -> Path:
        path = (where or self.bin) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        return path

    def uid(self, n: int) -> None:
        self.script("id", f'#!/bin/sh\n[ "$1" = "-u" ] && echo {n}\n')

    def apt_get(self) -> None:
        """An apt-get whose `install chromium` puts a working chromium on PATH."""
        self.script("apt-get", f'#!/bin/sh\necho "apt-get $*" >> {self.log}\n'
                    f'case "$*" in *install*chromium*) cat > {self.bin}/chromium <<"EOF"\n{CHROMIUM}EOF\n'
                    f'chmod 755 {self.bin}/chromium ;; esac\n')

    def sudo(self, *, passwordless: bool) -> None:
        if passwordless:
            self.script("sudo", f'#!/bin/sh\n[ "$1" = "-n" ] && shift\necho "sudo $*" >> {self.log}\nexec "$@"\n')
        else:
            self.script("sudo", '#!/bin/sh\necho "sudo: a password is required" >&2\nexit 1\n')

    def run(self, script: Path, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script)], env={**self.env, **env}, capture_output=True, text=True, timeout=60,
                              check=False)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def machine(tmp_path) -> FakeMachine:
    return FakeMachine(tmp_path)


def test_a_browser_on_path_is_used_and_nothing_is_installed(machine):
    """A chromium on PATH is the answer; apt-get is not run even though it could be."""
    chromium = machine.script("chromium", CHROMIUM)
    machine.uid(0)
    machine.apt_get()
    assert machine.run(FIND).stdout.strip() == str(chromium)
    done = machine.run(INSTALL)
    assert done.returncode == 0, done.stderr
    assert str(chromium) in done.stdout
    assert machine.calls() == []


def test_each_browser_name_is_found_and_a_stub_that_does_not_run_is_passed_over(machine):
    """chromium-browser, google-chrome and google-chrome-stable count too; Ubuntu's snap stub does not."""
    machine.script("chromium-browser", SNAP_STUB)
    chrome = machine.script("google-chrome-stable", CHROMIUM.replace("Chromium", "Google Chrome"))
    assert machine.run(FIND).stdout.strip() == str(chrome)
    browser = machine.script("chromium-browser", CHROMIUM)
    assert machine.run(FIND).stdout.strip() == str(browser)


def test_the_usual_places_are_searched_when_nothing_is_on_path(machine, tmp_path):
    """A browser outside PATH, in one of the usual places, is found."""
    elsewhere = machine.script("chrome", CHROMIUM, where=tmp_path / "opt" / "google" / "chrome")
    done = machine.run(FIND, JITGATE_BROWSER_PLACES=f"{tmp_path}/nowhere/chromium:{elsewhere}")
    assert done.stdout.strip() == str(elsewhere)


def test_jitgate_test_browser_wins_and_a_wrong_one_is_an_error(machine, tmp_path):
    """JITGATE_TEST_BROWSER is used before anything on PATH; when it does not run, nothing else is tried or installed."""
    machine.script("chromium", CHROMIUM)
    mine = machine.script("my-chrome", CHROMIUM, where=tmp_path / "browsers")
    assert machine.run(FIND, JITGATE_TEST_BROWSER=str(mine)).stdout.strip() == str(mine)
    assert machine.run(FIND, JITGATE_TEST_BROWSER="chromium").stdout.strip() == str(machine.bin / "chromium")

    machine.uid(0)
    machine.apt_get()
    done = machine.run(INSTALL, JITGATE_TEST_BROWSER=str(tmp_path / "missing"))
    assert done.returncode == 1
    assert "JITGATE_TEST_BROWSER=" in done.stderr and "not a Chrome or Chromium that runs" in done.stderr
    assert machine.calls() == []

# apt-get waits for dpkg's lock rather than failing when another apt-get holds it.
LOCK = "-o DPkg::Lock::Timeout=300 "


def test_as_root_with_apt_get_debians_chromium_is_installed(machine):
    """No browser, apt-get and root: `apt-get install chromium` runs, without sudo, and the new browser is named."""
    machine.uid(0)
    machine.apt_get()
    machine.sudo(passwordless=True)
    done = machine.run(INSTALL)
    assert done.returncode == 0, done.stderr
    assert machine.calls() == [f"apt-get {LOCK}update -qq", f"apt-get {LOCK}install -y -q chromium"]
    assert f"{machine.bin}/chromium" in done.stdout


def test_with_passwordless_sudo_it_installs_through_sudo(machine):
    """Not root, but sudo needs no password: apt-get runs through `sudo -n`."""
    machine.apt_get()
    machine.sudo(passwordless=True)
    done = machine.run(INSTALL)
    assert done.returncode == 0, done.stderr
    assert [c for c in machine.calls() if c.startswith("apt-get")] == [f"apt-get {LOCK}update -qq",
                                                                         f"apt-get {LOCK}install -y -q chromium"]
    assert f"sudo env DEBIAN_FRONTEND=noninteractive apt-get {LOCK}install -y -q chromium" in machine.calls()


def test_a_failing_apt_get_is_named_and_fails(machine):
    """apt-get itself fails (here: dpkg's lock held past the wait): the script says apt-get failed,
    never that it installed chromium, and exits 1."""
    machine.uid(0)
    machine.script("apt-get", f'#!/bin/sh\necho "apt-get $*" >> {machine.log}\n'
                   'echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2\nexit 100\n')
    done = machine.run(INSTALL)
    assert done.returncode == 1
    assert "apt-get could not install chromium" in done.stderr and "installed chromium, but" not in done.stderr


@pytest.mark.parametrize("setup", ["no apt-get", "sudo wants a password", "no sudo"])
def test_where_nothing_can_be_installed_it_says_how_and_fails(machine, setup):
    """Without apt-get, or not root without passwordless sudo: nothing is run, the instructions are printed, exit 1."""
    if setup != "no apt-get":
        machine.apt_get()
    if setup == "sudo wants a password":
        machine.sudo(passwordless=False)
    if setup == "no apt-get":
        machine.uid(0)
    done = machine.run(INSTALL)
    assert done.returncode == 1
    assert [c for c in machine.calls() if c.startswith("apt-get")] == []
    for hint in ("need Chrome or Chromium", "sudo apt-get install chromium", "JITGATE_TEST_BROWSER",
                 "playwright install chromium"):
        assert hint in done.stderr


def test_the_skip_switch_is_loud():
    """JITGATE_SKIP_BROWSER=1 is the only way past a missing browser, and it says so."""
    done = subprocess.run([str(INSTALL)], env={**os.environ, "JITGATE_SKIP_BROWSER": "1"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "skipped on purpose" in done.stderr
