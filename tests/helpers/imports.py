"""The package's import graph, read from the source with `ast` (nothing is imported or run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "mateffnet"


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package under `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_names(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(dotted name, line, inside a function) for each import statement at any depth; relative imports
    resolved, `from X import y` given as `X.y` (the caller decides whether that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.extend((f"{base}.{alias.name}", child.lineno, inside) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, dict[str, int]]:
    """{module: {imported package module: line}}: only imports of the package's own modules."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for target, line, _ in imported_names(path, name):
            while target and target not in modules:  # `from pkg import name` → pkg
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].setdefault(target, line)
    return graph


def function_level_imports(root: Path = PACKAGE_ROOT) -> dict[str, int]:
    """{module: how many import statements stand inside a function}, modules with none left out."""
    counts = {}
    for name, path in module_files(root).items():
        tree = ast.parse(path.read_text())
        inner = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))}
        if inner:
            counts[name] = len(inner)
    return counts


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            connect(node)
    return groups


if __name__ == "__main__":  # the numbers quoted in the layout issue's closing note
    import sys

    counts = function_level_imports(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_ROOT)
    for module, count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"{count:4d}  {module}")
    print(f"{sum(counts.values()):4d}  in all")
