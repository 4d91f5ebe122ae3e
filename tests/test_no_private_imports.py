"""No private name (``_name``) of one project module is used by another (src/ and training/, by AST).

A leading underscore says "internal to this module": another module that imports it (``from .api import
_resolve_model``) or reaches for it through the module (``auto._MODEL_LOCK``) couples itself to internals that
may change without notice; the name should be made public (or moved) instead. Private *modules* (``_widget.py``)
are a different rule: importing them inside their own package is fine (the ``private-modules`` contract of
import-linter checks that). Dunder names (``__version__``) are public.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"sum_core": REPO / "src", "napari_sum_hq": REPO / "src", "training": REPO}


def module_name(path: Path) -> str:
    for package, base in ROOTS.items():
        if path.is_relative_to(base / package):
            parts = path.relative_to(base).with_suffix("").parts
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def module_file(name: str) -> Path | None:
    """The source file of a project module, or None (not a project module, or a name inside a module)."""
    top = name.split(".")[0]
    if top not in ROOTS:
        return None
    base = ROOTS[top].joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def project_files() -> list[Path]:
    files = [*sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "training").rglob("*.py"))]
    return [f for f in files if module_name_or_none(f) is not None]


def module_name_or_none(path: Path) -> str | None:
    try:
        return module_name(path)
    except ValueError:
        return None


def resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    """Absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"], or None for anything that is not a plain attribute chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def private_uses(path: Path) -> Iterator[tuple[str, str, int]]:
    """``(importer, "module._name", line)`` for every private name of another project module used here."""
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}  # local name -> project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if module_file(alias.name) is None:
                    continue
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            source = resolve(importer, is_package, node.module, node.level)
            if module_file(source) is None:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if module_file(submodule) is not None:  # a module: private modules are the contract's job
                    aliases[alias.asname or alias.name] = submodule
                elif is_private(alias.name) and source != importer:
                    yield importer, f"{source}.{alias.name}", node.lineno
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        chain = dotted(node)
        if chain is None or chain[0] not in aliases:
            continue
        module = aliases[chain[0]]
        for part in chain[1:-1]:  # follow submodules: sum_core.batch.auto._X
            if module_file(f"{module}.{part}") is None:
                break
            module = f"{module}.{part}"
        else:
            if module != importer:
                yield importer, f"{module}.{chain[-1]}", node.lineno


def find_offenders() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in project_files():
        for importer, name, line in private_uses(path):
            found.setdefault((importer, name), []).append(f"{path.relative_to(REPO)}:{line}")
    return found


def test_no_new_private_name_is_used_across_modules():
    found = find_offenders()
    new = dict(found)
    listing = "\n".join(
        f"  {importer} uses {name} ({', '.join(where)})" for (importer, name), where in sorted(new.items())
    )
    assert not new, f"private names used across modules (make them public, or move them):\n{listing}"


def test_the_scan_sees_imports_and_module_attributes(tmp_path, monkeypatch):
    """The scanner itself: a from-import of a private name and a private attribute of an imported module."""
    package = tmp_path / "src" / "sum_core"
    (package / "batch").mkdir(parents=True)
    for name in ("__init__.py", "api.py", "batch/__init__.py", "batch/auto.py"):
        (package / name).write_text("")
    (package / "user.py").write_text(
        "from .api import _resolve_model, segment, __version__\n"
        "from .batch import auto\n"
        "import sum_core.batch.auto as batch_auto\n"
        "from . import batch\n"
        "lock = auto._MODEL_LOCK\n"
        "again = batch_auto._MODEL_LOCK\n"
        "deep = batch.auto._CACHE\n"
        "fine = auto.public, segment._private_attribute_of_a_function\n"
    )
    (package / "api.py").write_text("_own = 1\nx = _own\n")
    monkeypatch.setitem(ROOTS, "sum_core", tmp_path / "src")
    uses = sorted((name, line) for _, name, line in private_uses(package / "user.py"))
    assert uses == [
        ("sum_core.api._resolve_model", 1),
        ("sum_core.batch.auto._CACHE", 7),
        ("sum_core.batch.auto._MODEL_LOCK", 5),
        ("sum_core.batch.auto._MODEL_LOCK", 6),
    ]
    assert list(private_uses(package / "api.py")) == []
