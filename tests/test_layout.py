"""The layout rules hold for this tree (scripts/layout), and the check itself catches each kind of violation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _layout() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layout", ROOT / "scripts" / "layout.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_this_tree_keeps_the_layout() -> None:
    assert _layout().violations(ROOT) == []


def test_the_script_exits_0_on_this_tree() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "layout.py")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def _tree(tmp: Path, files: dict[str, str]) -> Path:
    for pkg in ("machine", "transport", "arpc"):
        (tmp / pkg).mkdir()
        (tmp / pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    return tmp


def test_each_kind_of_violation_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "machine/big.py": "x = 1\n" * 601,
        "machine/up.py": "from transport import connect\n",
        "machine/rel.py": "from ..arpc import cli\n",
        "machine/third.py": "import zmq\n",
        "transport/up.py": "import arpc.cli\n",
        "transport/sub/deep.py": "from ...arpc import cli\n",
        "transport/eager.py": "import prometheus_client\n",
        "transport/lazy.py": "def f():\n    import prometheus_client\n",
        "arpc/ok.py": "import transport\nimport machine\nimport click\n",
        "transport/ok.py": "import zmq\nfrom machine import Machine\nfrom . import up\n",
    })
    found = _layout().violations(root)
    text = "\n".join(found)
    assert "machine/big.py: 601 lines" in text
    assert "machine/up.py:1: imports transport" in text
    assert "machine/rel.py:1: imports arpc" in text
    assert "machine/third.py:1: imports zmq" in text
    assert "transport/up.py:1: imports arpc" in text
    assert "transport/sub/deep.py:1: imports arpc" in text
    assert "transport/eager.py:1: imports the optional extra prometheus_client" in text
    assert len(found) == 7, found


def test_a_module_of_exactly_the_limit_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"arpc/edge.py": "x = 1\n" * 600})
    assert _layout().violations(root) == []
