"""The package's floor plan, checked from the source: no import circle, and no import from a lower
layer into a higher one. Imports at any depth count (inside functions too).

The layers, from the ground up. A module may import its own layer's room (same package) and any lower
layer; rooms that share a layer do not import each other.

    0  base      mateffnet (package), errors, fileio, config, runtime: no mateffnet imports beyond base
    1  flow      optical-flow algorithms and the uint8 quantisation convention
    2  io        the on-disk contract: decode, jpeg, flowcodec, store, rawframes, annotations
    3  models    the networks and their weights
    4  data      the online path: sampling, transforms, dataset, loader, synthetic videos
    5  prepare   the offline job (videos → packed store)   |   viz  figures and reports
    6  engine    training, scoring, inference, export, experiments
    7  commands  one module per subcommand
    8  entry     cli, __main__, the `python -m mateffnet.experiments` shim
"""

from __future__ import annotations

import pytest

from tests.helpers.imports import PACKAGE_ROOT, circles, import_graph

LAYERS = [
    {"base": ["mateffnet", "mateffnet.errors", "mateffnet.fileio", "mateffnet.config", "mateffnet.runtime"]},
    {"flow": ["mateffnet.flow"]},
    {"io": ["mateffnet.io"]},
    {"models": ["mateffnet.models"]},
    {"data": ["mateffnet.data"]},
    {"prepare": ["mateffnet.prepare"], "viz": ["mateffnet.viz"]},
    {"engine": ["mateffnet.engine"]},
    {"commands": ["mateffnet.commands"]},
    {"entry": ["mateffnet.cli", "mateffnet.__main__", "mateffnet.experiments"]},
]


def place(module: str) -> tuple[int, str] | None:
    """(layer number, room) of a module: the room whose prefix names it most closely."""
    best = None
    for level, rooms in enumerate(LAYERS):
        for room, prefixes in rooms.items():
            for prefix in prefixes:
                matches = module == prefix or (prefix != "mateffnet" and module.startswith(prefix + "."))
                if matches and (best is None or len(prefix) > best[2]):
                    best = (level, room, len(prefix))
    return None if best is None else best[:2]


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        here = place(module)
        if here is None:
            problems.append(f"{module}: in no layer (add it to LAYERS where it belongs)")
            continue
        for target, line in sorted(targets.items()):
            there = place(target)
            if there is None or there[1] == here[1] or there[0] < here[0]:
                continue
            problems.append(f"{module}:{line} imports {target} ({there[1]}, layer {there[0]}) "
                            f"from {here[1]} (layer {here[0]})")
    return problems


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE_ROOT)


def test_the_package_has_no_import_circle(graph):
    assert circles(graph) == []


def test_every_module_sits_in_a_layer_and_imports_only_its_room_or_lower_layers(graph):
    assert layer_violations(graph) == []


def test_the_checks_see_a_circle_and_an_upward_import():
    made_up = {"mateffnet.io.store": {"mateffnet.engine.train": 3}, "mateffnet.engine.train": {"mateffnet.io.store": 1},
               "mateffnet.viz.plots": {"mateffnet.prepare.job": 7}}
    assert circles(made_up) == [["mateffnet.engine.train", "mateffnet.io.store"]]
    assert layer_violations(made_up) == [
        "mateffnet.io.store:3 imports mateffnet.engine.train (engine, layer 6) from io (layer 2)",
        "mateffnet.viz.plots:7 imports mateffnet.prepare.job (prepare, layer 5) from viz (layer 5)",
    ]


def test_the_graph_reads_imports_inside_functions_and_relative_ones(tmp_path):
    package = tmp_path / "mateffnet"
    (package / "io").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "io" / "__init__.py").write_text("")
    (package / "io" / "store.py").write_text("def f():\n    from ..errors import E\n    from . import jpeg\n")
    (package / "io" / "jpeg.py").write_text("import mateffnet.errors\n")
    assert import_graph(package) == {"mateffnet": {}, "mateffnet.errors": {}, "mateffnet.io": {},
                                     "mateffnet.io.jpeg": {"mateffnet.errors": 1},
                                     "mateffnet.io.store": {"mateffnet.errors": 2, "mateffnet.io.jpeg": 3}}
