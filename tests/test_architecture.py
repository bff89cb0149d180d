"""The package arrows of docs/architecture.md hold in the code: no import circle, and no import pointing up a layer.

The layer order is written once, in the two "layers" drawings of docs/architecture.md; this test reads it from
there and every `import` of edge/, trainer/, deploy/ and tools/ (read with ast, nothing is imported) against it.
Imports under `if TYPE_CHECKING:` and inside functions count: they are arrows of the design even when they do not
run at import time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PROJECTS = ("edge", "trainer", "deploy", "tools")
LAYERED = ("edge", "trainer")
# Which project may import which: the device's code stands alone (a Pi installs edge/ only).
MAY_IMPORT = {"edge": {"edge"}, "trainer": {"trainer", "edge"}, "deploy": {"deploy", "edge"}}


@dataclass(frozen=True)
class Arrow:
    source: str  # the importing module
    target: str  # the imported module (or package, for `from package import name`)
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({module_path(self.source).relative_to(ROOT)}:{self.line})"


def module_path(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def modules() -> dict[str, Path]:
    """Every module of the projects, by dotted name (a package by its own name)."""
    found = {}
    for project in PROJECTS:
        for path in sorted((ROOT / project).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def arrows(known: dict[str, Path]) -> Iterator[Arrow]:
    """The imports of each module that name another module of the projects."""
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from package import module` points at the module; `from module import name` at the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                if target in known and target != name:
                    yield Arrow(name, target, node.lineno)


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # modules and packages, as docs/architecture.md lists them


def declared_layers() -> dict[str, list[Layer]]:
    """{"edge": [lowest Layer, ..., highest], "trainer": [...]} from docs/architecture.md's drawings.

    A drawing is a fenced block whose first line is `<project>/ layers, highest first`; each further line is a
    layer's name and the modules or packages in it."""
    text = ARCHITECTURE.read_text()
    found = {}
    for project, body in re.findall(r"```\n(\w+)/ layers, highest first[^\n]*\n(.*?)```", text, re.S):
        rows = [line.split() for line in body.splitlines() if line.strip()]
        found[project] = [Layer(row[0], tuple(row[1:])) for row in reversed(rows)]
    return found


def layer_of(module: str, layers: list[Layer]) -> int | None:
    """The index of the layer that declares `module` or its package (the project's root package only itself)."""
    matches = [
        (len(declared), index)
        for index, layer in enumerate(layers)
        for declared in layer.modules
        if module == declared or ("." in declared and module.startswith(declared + "."))
    ]
    return max(matches)[1] if matches else None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of modules in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


KNOWN = modules()
ARROWS = list(dict.fromkeys(arrows(KNOWN)))  # one per import line and target


def test_no_module_imports_another_that_imports_it_back():
    graph: dict[str, set[str]] = {}
    for arrow in ARROWS:
        graph.setdefault(arrow.source, set()).add(arrow.target)
    circles = import_cycles(graph)
    assert not circles, "import circles (break them by moving code down a layer):\n" + "\n".join(
        " <-> ".join(c) + ":\n  " + "\n  ".join(str(a) for a in ARROWS if a.source in c and a.target in c)
        for c in circles
    )


def test_architecture_md_draws_the_layers_of_edge_and_trainer_with_existing_modules():
    layers = declared_layers()
    assert sorted(layers) == sorted(LAYERED), f"docs/architecture.md draws layers for {sorted(layers)}"
    for project, rows in layers.items():
        names = [name for layer in rows for name in layer.modules]
        assert len(names) == len(set(names)), f"{project}: a module is in two layers"
        missing = [name for name in names if name not in KNOWN]
        assert not missing, f"docs/architecture.md names {missing} in the {project}/ layers: no such module"
        unplaced = [m for m in KNOWN if m.split(".")[0] == project and layer_of(m, rows) is None]
        assert not unplaced, f"in no layer of docs/architecture.md's {project}/ drawing: {unplaced}"


def test_every_import_of_edge_and_trainer_points_down_or_within_its_layer():
    layers = declared_layers()
    upward = []
    for arrow in ARROWS:
        project = arrow.source.split(".")[0]
        if project not in layers or arrow.target.split(".")[0] != project:
            continue
        source, target = layer_of(arrow.source, layers[project]), layer_of(arrow.target, layers[project])
        if source is not None and target is not None and target > source:
            upward.append(f"{arrow}: {layers[project][source].name} imports {layers[project][target].name}")
    assert not upward, "imports pointing up docs/architecture.md's layers:\n" + "\n".join(upward)


def test_the_device_code_imports_neither_the_trainer_nor_the_deploy_tool():
    wrong = [
        str(a)
        for a in ARROWS
        if a.source.split(".")[0] in MAY_IMPORT and a.target.split(".")[0] not in MAY_IMPORT[a.source.split(".")[0]]
    ]
    assert not wrong, "imports across projects that docs/architecture.md rules out:\n" + "\n".join(wrong)


# What only the training host installs (pyproject.toml's `train` extra): a device has 1-4 GB and none of it.
TRAINING_HOST_ONLY = {"tensorflow", "keras", "tensorboard", "matplotlib", "tqdm"}


def test_the_device_code_never_imports_what_only_the_training_host_installs():
    wrong = []
    for name, path in KNOWN.items():
        if name.split(".")[0] != "edge":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            wrong += [
                f"{name} imports {top} ({path.relative_to(ROOT)}:{node.lineno})"
                for top in tops
                if top in TRAINING_HOST_ONLY
            ]
    assert not wrong, "edge/ runs on the device, which has no TensorFlow:\n" + "\n".join(wrong)
