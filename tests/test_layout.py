"""The package's layout: sibling imports without cycles, web modules importable alone, one error hierarchy."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge_runtime

PACKAGE_DIR = Path(edge_runtime.__file__).resolve().parent
HAS_FLASK = importlib.util.find_spec("flask") is not None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_level_imports(path: Path) -> set[str]:
    """The ``edge_runtime`` modules ``path`` imports at module level (not inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:  # top-level statements only
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("edge_runtime"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("edge_runtime"):
                continue
            for alias in node.names:  # ``from . import web`` names a module, not an attribute
                candidate = f"{target}.{alias.name}"
                sub = PACKAGE_DIR.parent.joinpath(*candidate.split("."))
                found.add(candidate if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                          else target)
    found.discard(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name = _module_name(path)
        # A package's __init__ importing its own modules is how the public API is gathered, not a dependency
        # of those modules on each other.
        graph[name] = {t for t in _module_level_imports(path)
                       if not (path.name == "__init__.py" and t.startswith(name + "."))}
    return graph


def test_no_import_cycles_between_runtime_modules():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.skipif(not HAS_FLASK, reason="the web extra (Flask) is not installed")
@pytest.mark.parametrize("module", ["edge_runtime.web.state", "edge_runtime.web.api", "edge_runtime.web.pages",
                                    "edge_runtime.web.app", "edge_runtime.web.server"])
def test_each_web_module_imports_first_in_a_fresh_interpreter(module):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_installed_models_are_looked_for_where_setup_py_puts_them(monkeypatch):
    from edge_runtime.model_files import MODELS_ENV, candidate_dirs

    setup_py = PACKAGE_DIR.parent / "setup.py"
    if not setup_py.is_file():
        pytest.skip("not a checkout: no setup.py")
    call = next(node for node in ast.walk(ast.parse(setup_py.read_text(encoding="utf-8")))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    package_dir = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_dir"))
    (data_package,) = [name for name, folder in package_dir.items() if folder == "android_assets"]
    assert data_package.startswith("edge_runtime.")
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert PACKAGE_DIR.joinpath(*data_package.split(".")[1:]) in candidate_dirs()


def test_every_error_class_is_defined_in_errors_py():
    """No exception class lives elsewhere in the runtime: one hierarchy, in one file."""
    elsewhere = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name == "errors.py" and path.parent == PACKAGE_DIR:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if node.name.endswith("Error") or bases & {"Exception", "BaseException"} or any(
                        b.endswith("Error") for b in bases):
                    elsewhere.append(f"{path.relative_to(PACKAGE_DIR)}: {node.name}")
    assert not elsewhere


def test_every_public_error_is_a_cxr_error_with_its_own_code():
    from edge_runtime import errors

    classes = [value for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
               and value.__module__ == errors.__name__]
    assert len(classes) >= 20
    for cls in classes:
        assert issubclass(cls, errors.CxrError), cls
    codes = [cls.code for cls in classes if cls is not errors.ApiError]  # an ApiError carries each request's code
    assert len(codes) == len(set(codes))
    # Callers that catch the builtin keep working.
    assert issubclass(errors.UnknownModelError, LookupError)
    assert issubclass(errors.SettingsError, ValueError)
    assert errors.ApiError(404, "not_found", "no such row").code == "not_found"


def test_the_cli_imports_no_optional_or_heavy_dependency():
    """Optional dependencies are imported where they are used: the CLI starts on a bare runtime install."""
    heavy = ("flask", "waitress", "werkzeug", "pydicom", "pynetdicom", "fpdf", "picamera2", "tensorflow", "cv2")
    code = ("import sys, edge_runtime.cli, edge_runtime.service, edge_runtime.receive, edge_runtime.web.config; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
