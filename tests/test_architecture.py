"""The package's shape, as docs/architecture.md states it: layers that import only downwards, no import cycle,
modules and functions within their size limits, every top-level name defined in one module, and the two
layout tables naming every folder and module."""

import ast
import re
from collections import defaultdict

import pytest

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "aslib"
#: docs/architecture.md's layers: a module may import from its own layer and those below it.
LAYERS = {"utils": 0, "core": 1, "nn": 2, "models": 3, "solver": 3, "training": 4, "study": 5, "examples": 5,
          "runner": 6}
#: Command-line entry points: each runnable module has its own ``main``.
SHARED_NAMES = {"main", "__all__"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_text(), filename=str(path))
    return modules


MODULES = _modules()


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    """The ``aslib`` modules a module imports (``if TYPE_CHECKING:`` blocks excluded: annotations only)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aslib"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("aslib"))
    return found


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    return {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING" for n in ast.walk(node)}


def test_every_module_is_in_a_layer_folder():
    loose = [m for m in MODULES if m != "aslib" and _layer(m) is None]
    assert not loose, f"modules outside the layer folders of docs/architecture.md: {loose}"


def test_layers_import_only_downwards():
    wrong = []
    for module, tree in MODULES.items():
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("aslib."):
                continue
            own, other = _layer(module), _layer(node.module)
            if own is not None and other is not None and other > own:
                wrong.append(f"{module} (layer {own}) imports {node.module} (layer {other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    graph = {m: {i for i in _imports(t, top_level_only=True) if i in MODULES and i != m} for m, t in MODULES.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]) if dep in path
                            else f"import cycle through {dep}")
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_modules_and_functions_within_their_size():
    long_modules = [(p.relative_to(REPO_ROOT).as_posix(), n) for p in PACKAGE.rglob("*.py")
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = [(m, node.name, node.end_lineno - node.lineno + 1) for m, tree in MODULES.items()
                      for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_every_top_level_name_is_defined_in_one_module():
    where = defaultdict(list)
    for module, tree in MODULES.items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                names = []
            for name in names:
                where[name].append(module)
    twice = {name: modules for name, modules in where.items() if len(modules) > 1 and name not in SHARED_NAMES}
    assert not twice, f"names defined in more than one module: {twice}"


@pytest.mark.parametrize("document", ["README.md", "docs/architecture.md"])
def test_layout_tables_name_every_folder_and_module(document):
    text = (REPO_ROOT / document).read_text()
    folders = sorted({p.parent.relative_to(REPO_ROOT).as_posix() for p in PACKAGE.rglob("*.py")} - {"aslib"})
    missing = [f for f in folders if f"`{f}/" not in text]
    assert not missing, f"{document} does not name the folders {missing}"
    stems = sorted({p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__"})
    unnamed = [s for s in stems if not re.search(rf"\b{s}\b", text)]
    assert not unnamed, f"{document} does not name the modules {unnamed}"
