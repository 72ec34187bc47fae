"""``arpc completion SHELL``: the scripts, run in the real shells against a daemon (bash always; zsh and fish in
tmux when they are installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arpc_e2e import PY, Daemon, arpc, env, transport_works

from arpc.shell_completion import candidates

BIN = str(Path(PY).parent)  # the venv's bin: where the `arpc` console script is
STATES = ["Exception", "ErrOnClient", "Foo", "Bar", "Baz", "Start", "Ready"]
needs_transport = pytest.mark.skipif(not transport_works(), reason="transport not available")


@pytest.fixture(scope="module")
def addrs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = Daemon(tmp_path_factory.mktemp("compl") / "addrs", "--active", "worker1=Foo")
    try:
        yield d.dir
    finally:
        d.stop()


def test_scripts_and_usage() -> None:
    for shell, marker in (("bash", "complete -o filenames -F _arpc_complete arpc"), ("zsh", "compdef _arpc arpc"),
                          ("fish", "complete -c arpc")):
        r = arpc("completion", shell)
        assert r.code == 0 and marker in r.out, shell
    r = arpc("completion", "tcsh")
    assert (r.code, r.out, r.err) == (2, "", "err> usage: arpc completion {bash,zsh,fish}\n")
    assert arpc("completion").code == 2


def test_root_candidates_need_no_connection() -> None:
    assert candidates("arpc ") == ("words", ["demo", "keygen", "completion"])
    assert candidates("arpc completion ") == ("words", ["bash", "zsh", "fish"])
    assert candidates("arpc keygen ") == ("dir", [])
    assert candidates("arpc -d ") == ("dir", [])
    assert candidates("arpc --file ") == ("file", [])
    assert candidates("arpc --log-level ")[1] == ["0", "1", "2", "3", "4", "5"]
    kind, opts = candidates("arpc -")
    assert kind == "words" and {"--dir", "--connect-timeout", "--json", "--"} <= set(opts)
    assert candidates("arpc 127.0.0.1:1 ") == ("words", ["--"])
    # after --, with nobody listening: the commands and their flags still complete
    kind, cmds = candidates("arpc 127.0.0.1:1 --connect-timeout 0.1 -- gr")
    assert (kind, cmds) == ("words", ["group-add", "group-remove"])
    assert candidates("arpc 127.0.0.1:1 -- script ") == ("file", [])
    assert candidates("arpc 127.0.0.1:1 -- when . Foo --ti")[1] == ["--timeout"]


def _bash(script: str) -> str:
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, timeout=60,
                       env=env(PATH=BIN + os.pathsep + os.environ.get("PATH", "")))
    assert r.returncode == 0, r.stderr
    return r.stdout


BASH_TRY = r"""
eval "$(arpc completion bash)"
try() {  # complete at the end of $1, as bash does on Tab
    COMP_LINE="$1"; COMP_POINT=${#1}
    read -ra COMP_WORDS <<< "$1"
    [[ "$1" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMPREPLY=()
    _arpc_complete arpc
    echo "${COMPREPLY[*]}"
}
"""


@needs_transport
def test_bash(addrs: Path, tmp_path: Path) -> None:
    (tmp_path / "one.arpc").write_text("")
    lines = [
        "arpc comp",
        f"arpc -d {addrs} -- ",
        f"arpc -d {addrs} -- add ",
        f"arpc -d {addrs} -- add worker1 ",
        f"arpc -d {addrs} -- remove worker1 ",
        f"arpc -d {addrs} -- add worker1 Bar --arg k --val v --a",
        f"arpc -d {addrs} -- script {tmp_path}/o",
        f"arpc -d {tmp_path}/nope -- add ",
    ]
    out = _bash(BASH_TRY + "".join(f"try '{ln}'\n" for ln in lines)).splitlines()
    assert out[0] == "completion"
    assert out[1].split()[:3] == ["add", "remove", "set"] and "when-args" in out[1].split()
    assert out[2].split() == [".", "worker0", "worker1", "worker2"]
    assert out[3].split() == [s for s in STATES if s != "Foo"]  # add: inactive states only
    assert out[4].split() == ["Foo"]  # remove: active ones
    assert out[5].split() == ["--arg"]
    assert out[6] == f"{tmp_path}/one.arpc"
    assert out[7] == "."  # no machines there: only `.`, and no error in the line


def _tmux_shell(name: str, command: str, line: str, want: list[str]) -> str:
    """Start ``command`` (an interactive shell) in tmux, type ``line`` and Tab, return the screen once every
    word of ``want`` shows on it (a bounded wait)."""
    sess = f"arpc-compl-{name}-{os.getpid()}"
    subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", sess, "-x", "150", "-y", "30", command], check=True,
                   timeout=10)
    screen = ""
    try:
        deadline = time.monotonic() + 20
        while "READY" not in screen and time.monotonic() < deadline:  # the rc file echoes READY
            screen = _capture(sess)
        subprocess.run(["tmux", "send-keys", "-t", sess, line, "Tab"], check=True, timeout=10)
        while not all(w in screen.split() for w in want) and time.monotonic() < deadline:
            screen = _capture(sess)
        return screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)


def _capture(sess: str) -> str:
    time.sleep(0.1)  # paces the polling of another process's screen; no result depends on it
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", sess], capture_output=True, text=True,
                          timeout=10).stdout


@needs_transport
@pytest.mark.skipif(not (shutil.which("zsh") and shutil.which("tmux")), reason="zsh or tmux not installed")
def test_zsh(addrs: Path, tmp_path: Path) -> None:
    (tmp_path / ".zshrc").write_text(
        f'autoload -U compinit; compinit -u\nexport PATH={BIN}:$PATH\neval "$(arpc completion zsh)"\n'
        'PS1="%% "\necho READY\n')
    screen = _tmux_shell("zsh", f"env ZDOTDIR={tmp_path} zsh -i", f"arpc -d {addrs} -- add worker1 ",
                         [s for s in STATES if s != "Foo"])
    words = screen.split()
    assert all(s in words for s in STATES if s != "Foo"), screen
    assert "Foo" not in words[words.index("worker1") + 1:], screen


@needs_transport
@pytest.mark.skipif(not (shutil.which("fish") and shutil.which("tmux")), reason="fish or tmux not installed")
def test_fish(addrs: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "fish"
    cfg.mkdir()
    (cfg / "config.fish").write_text(
        f"set -gx PATH {BIN} $PATH\narpc completion fish | source\n"
        'function fish_prompt; echo "> "; end\nfunction fish_greeting; end\necho READY\n')
    screen = _tmux_shell("fish", f"env XDG_CONFIG_HOME={tmp_path} fish -i", f"arpc -d {addrs} -- remove worker1 ",
                         ["Foo"])
    assert "Foo" in screen.split()[screen.split().index("worker1") + 1:], screen
