"""`arpc keygen` writes the secret key private from its first byte and never takes over a file that is not
plainly its own (issue 12 item 14). Real subprocesses of `arpc keygen`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from arpc_e2e import PY, ROOT, env

# Runs `arpc keygen DIR` with an audit hook that, at every audited operation of the process (open, write, chmod,
# rename ...), looks at the files in DIR: a file holding a secret key that others may read is a leak, however
# briefly it lasts.
WATCHED = """
import os, stat, sys
d = sys.argv[1]
leaks, busy = [], [False]

def hook(event, args):
    if busy[0]:
        return
    busy[0] = True
    try:
        for n in os.listdir(d):
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                with open(p, errors="replace") as f:
                    if "secret-key" in f.read():
                        leaks.append(f"{event}: {n} {oct(st.st_mode & 0o777)}")
    except OSError:
        pass
    finally:
        busy[0] = False

os.umask(0o022)
sys.addaudithook(hook)
from arpc.cli import run
code = run(["keygen", d])
print("LEAKS", len(leaks), leaks[:3], "CODE", code)
"""


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "arpc", "keygen", *args], capture_output=True, text=True, env=env(),
                          cwd=str(ROOT), timeout=30)


def test_secret_is_private_from_the_first_byte(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir()
    r = subprocess.run([PY, "-c", WATCHED, str(d)], capture_output=True, text=True, env=env(), cwd=str(ROOT),
                       timeout=30)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("LEAKS"))
    assert line.startswith("LEAKS 0 ") and line.endswith("CODE 0"), line
    assert (d / "arpc.key_secret").stat().st_mode & 0o777 == 0o600
    assert (d / "arpc.key").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in d.iterdir()) == ["arpc.key", "arpc.key_secret"]  # no temp file left


def test_a_symlink_in_place_of_the_secret_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (d / "arpc.key_secret").symlink_to(victim)
    r = keygen(str(d))
    assert r.returncode == 1 and "symbolic link" in r.stderr and str(d / "arpc.key_secret") in r.stderr, r.stderr
    assert victim.read_text() == "precious\n"
    assert not (d / "arpc.key").exists()  # nothing written


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="needs root to give a file to another user")
def test_a_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir()
    theirs = d / "arpc.key_secret"
    theirs.write_text("theirs\n")
    os.chown(theirs, 65534, 65534)  # nobody
    r = keygen(str(d))
    assert r.returncode == 1 and "owned by uid 65534" in r.stderr, r.stderr
    st = theirs.stat()
    assert (st.st_uid, theirs.read_text()) == (65534, "theirs\n")


def test_keygen_again_replaces_own_keys(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    assert keygen(str(d)).returncode == 0
    first = (d / "arpc.key_secret").read_text()
    (d / "arpc.key_secret").chmod(0o644)  # loosened by hand: the new file is private again
    assert keygen(str(d)).returncode == 0
    assert (d / "arpc.key_secret").read_text() != first
    assert (d / "arpc.key_secret").stat().st_mode & 0o777 == 0o600
