"""Completion of ``arpc`` command lines in bash, zsh and fish: ``arpc completion SHELL`` prints the script.

The script calls ``arpc`` back with ``_ARPC_COMPLETE=SHELL`` and the line up to the cursor in ``_ARPC_LINE``;
:func:`answer` prints what may come next: a first line saying the kind (``words``, ``file`` or ``dir``: the shell
completes paths itself), then one candidate a line. After ``--`` it is the REPL's completion (commands, flags,
machine ids, states), with a short connection to the addresses on the line, so machine ids and states are live.
"""

from __future__ import annotations

import os
import sys

SHELLS = ("bash", "zsh", "fish")
CONNECT_TIMEOUT = 0.5  # a Tab must stay quick: machines that do not answer by then are left out

_BASH = r"""# arpc completion for bash: eval "$(arpc completion bash)" (e.g. in ~/.bashrc)
_arpc_complete() {
    local IFS=$'\n' out kind cur="${COMP_WORDS[COMP_CWORD]}"
    out=($(_ARPC_COMPLETE=bash _ARPC_LINE="${COMP_LINE:0:COMP_POINT}" "$1" 2>/dev/null)) || return 0
    kind="${out[0]}"
    case "$kind" in
        file) COMPREPLY=($(compgen -f -- "$cur")) ;;
        dir) COMPREPLY=($(compgen -d -- "$cur")) ;;
        *) COMPREPLY=("${out[@]:1}") ;;
    esac
}
complete -o filenames -F _arpc_complete arpc
"""

_ZSH = r"""#compdef arpc
# arpc completion for zsh: eval "$(arpc completion zsh)" (e.g. in ~/.zshrc, after compinit)
_arpc() {
    local -a out
    out=("${(@f)$(_ARPC_COMPLETE=zsh _ARPC_LINE="${(j: :)words[1,CURRENT]}" ${words[1]} 2>/dev/null)}")
    case "${out[1]}" in
        file) _files ;;
        dir) _files -/ ;;
        *) compadd -- "${(@)out[2,-1]}" ;;
    esac
}
compdef _arpc arpc
"""

_FISH = r"""# arpc completion for fish: arpc completion fish | source (e.g. in ~/.config/fish/config.fish)
function __arpc_complete
    set -l out (env _ARPC_COMPLETE=fish _ARPC_LINE=(commandline -cp) arpc 2>/dev/null)
    switch "$out[1]"
        case file
            __fish_complete_path (commandline -ct)
        case dir
            __fish_complete_directories (commandline -ct)
        case '*'
            printf '%s\n' $out[2..-1]
    end
end
complete -c arpc -f -a '(__arpc_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}

# root options whose value is a path, and which kind
_PATH_OPTS = {"-f": "file", "--file": "file", "-d": "dir", "--dir": "dir", "--server-key": "file",
              "--client-key": "file"}


def script(shell: str) -> str:
    """The completion script of ``shell``; ``ValueError`` for a shell not in :data:`SHELLS`."""
    try:
        return SCRIPTS[shell]
    except KeyError:
        raise ValueError(f"unknown shell: {shell} (use one of {', '.join(SHELLS)})") from None


def _root_options() -> tuple[list[str], set[str]]:
    """The root's long option names (for display), and every name of an option that takes a value."""
    import click

    from .cli import root

    names: list[str] = []
    valued: set[str] = set()
    for p in root.params:
        if isinstance(p, click.Option) and not p.hidden:
            names.extend(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
            if not p.is_flag:
                valued.update(p.opts)
    return names + ["--help"], valued


def candidates(line: str) -> tuple[str, list[str]]:
    """What may follow ``line`` (an ``arpc`` command line up to the cursor): the kind and the candidates."""
    parts = line.split()
    words, cur = (parts, "") if not line or line[-1].isspace() else (parts[:-1], parts[-1])
    words = words[1:]  # the program's name
    if "--" in words:
        i = words.index("--")
        return _command(words[:i], words[i + 1:], cur)
    if words[:1] == ["completion"]:
        return "words", list(SHELLS) if len(words) == 1 else []
    if words[:1] == ["keygen"]:
        return ("dir", []) if len(words) == 1 else ("words", ["--name"] if cur.startswith("-") else [])
    opts, valued = _root_options()
    if words and words[-1] in valued:
        kind = _PATH_OPTS.get(words[-1])
        if kind is not None:
            return kind, []
        return "words", [str(n) for n in range(6)] if words[-1] == "--log-level" else []
    if cur.startswith("-"):
        return "words", [*opts, "--"]
    items = ["demo", "keygen", "completion"] if not words else []
    if words:
        items.append("--")
    return "words", items


def _command(root_args: list[str], cmd_words: list[str], cur: str) -> tuple[str, list[str]]:
    """The REPL's completion of ``cmd_words cur``, on a session built from the root arguments."""
    from .cli import parse_root
    from .completer import candidates as repl_candidates
    from .session import Session

    if root_args[:1] == ["demo"]:
        root_args = root_args[1:]
    session = Session(connect_timeout=CONNECT_TIMEOUT, eager=True)
    try:
        with open(os.devnull, "w") as quiet:
            saved, sys.stderr = sys.stderr, quiet  # a bad root argument is not Tab's business
            try:
                opts = parse_root(root_args)
            finally:
                sys.stderr = saved
        if not isinstance(opts, int) and (opts.addrs or opts.file or opts.dir):
            try:
                session.connect_timeout = min(opts.connect_timeout, CONNECT_TIMEOUT)
                session.load(opts.addrs, file=opts.file, directory=opts.dir)
                session.open()
            except Exception:  # noqa: BLE001 - no machines: commands and flags still complete
                pass
        text = " ".join([*cmd_words, cur])
        cand = repl_candidates(session, text)
    finally:
        session.close()
    if cand.kind == "file":
        return "file", []
    return "words", [c for c in cand.items if c.startswith(cand.word)]


def answer(shell: str, line: str) -> int:
    """Print the completion of ``line`` for ``shell`` (the callback the scripts make); always exit 0."""
    try:
        kind, items = candidates(line)
    except Exception:  # noqa: BLE001 - a Tab never prints a traceback into the user's line
        kind, items = "words", []
    if kind == "words":
        parts = line.split()
        cur = "" if not line or line[-1].isspace() else parts[-1]
        items = [c for c in items if c.startswith(cur)]
    sys.stdout.write("\n".join([kind, *items]) + "\n")
    return 0
