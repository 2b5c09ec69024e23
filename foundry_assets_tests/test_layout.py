"""The codebase's shape stays readable: thin assets, short functions, small modules, no import circles.

Limits (issue 12): an asset body at most 40 lines, any function at most 60, a module at most 350 (or a one-line reason
in LONG_MODULES). The import graph of `foundry_assets` (every import, module level or inside a function, except under
TYPE_CHECKING) has no cycle.
"""

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).parents[1] / "foundry_assets"
ASSET_LINES, FUNCTION_LINES, MODULE_LINES = 40, 60, 350

LONG_MODULES: dict[str, str] = {
    "foundry_assets.manifest": "the manifest's schema: one pydantic class per section, every field with the "
    "description users read (`foundry schema`, README reference); split, the reference would be scattered",
}
"""Modules allowed over MODULE_LINES, each with its reason."""


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return found


def _is_asset(node: ast.FunctionDef) -> bool:
    return any("asset" in ast.unparse(d).split("(")[0] for d in node.decorator_list)


def _body_lines(node: ast.FunctionDef) -> int:
    """Lines of the function from its first statement after the docstring to its end."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:] or body
    return (node.end_lineno or node.lineno) - body[0].lineno + 1


def test_assets_are_thin_and_functions_short() -> None:
    too_long = []
    for name, (_path, tree) in _modules().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            whole = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, ast.FunctionDef) and _is_asset(node) and _body_lines(node) > ASSET_LINES:
                too_long.append(
                    f"asset {name}.{node.name}: body of {_body_lines(node)} lines > {ASSET_LINES}"
                )
            elif whole > FUNCTION_LINES:
                too_long.append(f"{name}.{node.name}: {whole} lines > {FUNCTION_LINES}")
    assert not too_long, "\n".join(too_long)


def test_modules_are_small_or_say_why() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, (path, _) in _modules().items()
    }
    too_long = [
        f"{name}: {n} lines" for name, n in sizes.items() if n > MODULE_LINES and name not in LONG_MODULES
    ]
    assert not too_long, "\n".join(too_long)
    stale = [name for name in LONG_MODULES if sizes.get(name, 0) <= MODULE_LINES]
    assert not stale, f"no longer long, drop from LONG_MODULES: {stale}"


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The foundry modules `name` imports (relative imports resolved; `from pkg import mod` counts as pkg.mod)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            base = node.module
            if node.level:
                package = name.split(".")[: -node.level] if not name.endswith("__init__") else name.split(".")
                base = ".".join([*package, node.module])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name}


def test_no_import_circles() -> None:
    modules = _modules()
    graph = nx.DiGraph()
    for name, (_path, tree) in modules.items():
        graph.add_node(name)
        for target in _imports(name, tree, set(modules)):
            # importing a package runs its __init__, which is not a cycle through the package's own modules
            if not name.startswith(target + "."):
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import circles:\n" + "\n".join(" → ".join([*c, c[0]]) for c in cycles[:10])
