"""The shape of the package: every class name is unique and no module grows past a size
a reader can hold (issue 14, "one of each"). Read with ``ast``, nothing is imported."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import voipsec

PACKAGE = Path(voipsec.__file__).parent

#: Lines a module may have: past this it is split by concept, as monitor/fraud was.
MAX_MODULE_LINES = 1_000

#: Modules still longer than MAX_MODULE_LINES, by path below src/voipsec. This list
#: shrinks as issue 14 goes on; a module may leave it, none may join it.
TOO_LONG_FOR_NOW: frozenset[str] = frozenset()


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]


def test_package_layout_class_names_unique() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        for name in _classes(path):
            where[name].append(_name(path))
    shared = {name: places for name, places in where.items() if len(places) > 1}
    assert shared == {}


def test_package_layout_modules_short() -> None:
    lengths = {_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    too_long = {name for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert too_long - TOO_LONG_FOR_NOW == set()


def test_package_layout_allow_list_is_real() -> None:
    # A module split below the limit leaves the list in the same change.
    lengths = {_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    assert {name for name in TOO_LONG_FOR_NOW if lengths.get(name, 0) <= MAX_MODULE_LINES} == set()


def _voipsec_imports(path: Path) -> set[str]:
    """The voipsec modules ``path`` imports (relative imports resolved), any level."""
    module = ("voipsec/" + _name(path)).removesuffix(".py").removesuffix("/__init__")
    package = module.split("/") if path.name == "__init__.py" else module.split("/")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "voipsec" or name.startswith("voipsec.")}


def test_package_layout_config_imports_no_feature_module() -> None:
    # Configuration sits below every feature: it may import only itself.
    modules = sorted((PACKAGE / "config").glob("*.py"))
    assert [m.name for m in modules] == ["__init__.py", "checks.py", "template.py"]
    imported = set().union(*(_voipsec_imports(m) for m in modules))
    assert imported <= {"voipsec.config", "voipsec.config.checks", "voipsec.config.template"}


#: The sans-IO cores (DESIGN.md): they take parsed data and read no file.
SANS_IO = (
    "core/",
    "sip/",
    "edge/",
    "monitor/fraud/",
    "nat/stun.py",
    "nat/turn",
    "media/sdp.py",
    "media/icelite.py",
    "media/streams.py",
    "media/rtcp.py",
    "media/dtls.py",
    "media/dtlsidentity.py",
    "media/dtlsleg.py",
    "media/fingerprint.py",
    "endpoints/useragent.py",
    "endpoints/versions.py",
    "endpoints/advisories.py",
    "endpoints/feeds.py",
    "pki/lifecycle.py",
    "endpoints/policy.py",
    "audit/model.py",
    "audit/targets.py",
    "audit/report.py",
    "audit/specs.py",
    "endpoints/offer.py",
    "audit/localchecks.py",
    "audit/localpasswords.py",
    "audit/turnpeers.py",
    "audit/livechecks.py",
    "audit/liverequests.py",
)
#: The shell's loaders that live beside their cores: they are the ones that read.
LOADERS = frozenset({"core/dialplan_loader.py", "edge/ids_loader.py", "monitor/fraud/loader.py"})
_READS = frozenset({"open", "read_text", "read_bytes", "files"})


def _reads(path: Path) -> set[str]:
    """Calls and imports in ``path`` that read files."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in _READS:
                found.add(name)
        elif isinstance(node, ast.ImportFrom) and node.module in ("importlib.resources", "yaml"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in ("yaml", "csv"))
    return found


def test_package_layout_cores_read_no_files() -> None:
    cores = [p for p in _modules() if _name(p).startswith(SANS_IO)]
    assert len(cores) > 20
    reading = {_name(p): _reads(p) for p in cores if _name(p) not in LOADERS}
    assert {name: calls for name, calls in reading.items() if calls} == {}
    assert all(_reads(PACKAGE / name) for name in LOADERS)  # the check sees real reads


#: Module rings still there. Each is a frozenset of module names; a new ring, or a
#: listed one that is gone, fails.
RINGS_FOR_NOW: frozenset[frozenset[str]] = frozenset()


def _rings() -> set[frozenset[str]]:
    """Strongly connected groups of modules (imports under TYPE_CHECKING included)."""
    import grimp

    graph = grimp.build_graph("voipsec")
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    rings: set[frozenset[str]] = set()

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                rings.add(frozenset(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return rings


def test_package_layout_no_import_rings_but_the_known_one() -> None:
    assert _rings() == RINGS_FOR_NOW
