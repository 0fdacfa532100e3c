"""The package's import layering: no unit imports one on its own or a higher floor, but for the known exceptions.

Units and edges as scripts/import_graph.py reads them (``ast``: module-level and function-level ``import jaxvx...``
/ ``from jaxvx... import``). A new module needs a floor here; a new upward import fails, naming the edge and files.
"""

import importlib.util
import pathlib

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"
_spec = importlib.util.spec_from_file_location("import_graph", _SCRIPT)
graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph)

FLOORS = {
    # checks and exceptions everything may raise; environment, provenance and strict-JSON helpers
    "_checks": 0, "_errors": 0, "_distributed": 0, "_provenance": 0, "_json": 0, "_maps": 0,
    # video files and preprocessing, models, relevance transforms and metrics, optical flow, pickles, the target class
    "_pickle": 1, "io": 1, "models": 1, "transforms": 1, "metrics": 1, "flow": 1, "_target": 1,
    # what reads models and data: the traced program, converters, data sources
    "_program": 2, "convert": 2, "data": 2,
    # the program's public face, checkpoints (which convert), the max-pool backward every method differentiates with
    "program": 3, "checkpoints": 3, "_max_pool": 3,
    # LRP on the program, and the methods (one of them LRP)
    "lrp": 4,
    "methods": 5,
    # over a dataset: runs and sweeps of the methods, training
    "pipeline": 6, "train": 6,
    # pictures (of a sweep too)
    "viz": 7,
    # one clip end to end, and the command line over everything
    "explain": 8,
    "cli": 9,
    "__main__": 10,
}

# Upward (or same-floor) imports the code has today, all inside functions; each one is debt, not a licence.
KNOWN_EXCEPTIONS = {
    # convert.i3d_from_pickle checks the converted variables with checkpoints._check_fit / abstract_variables,
    # while checkpoints.load converts DeepMind's I3D with convert.i3d_from_pickle on first load
    ("convert", "checkpoints"),
}


def test_every_unit_has_a_floor():
    missing = sorted(set(graph.units()) - set(FLOORS))
    assert not missing, f"give these modules a floor in tests/test_layering.py: {missing}"
    gone = sorted(set(FLOORS) - set(graph.units()))
    assert not gone, f"these units no longer exist; drop them from FLOORS: {gone}"


def test_no_upward_imports():
    upward = [
        f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]}) in {', '.join(sorted(set(files)))}"
        for (a, b), files in sorted(graph.edges().items())
        if FLOORS[b] >= FLOORS[a] and (a, b) not in KNOWN_EXCEPTIONS
    ]
    assert not upward, "imports up the layering:\n" + "\n".join(upward)


def test_known_exceptions_still_exist():
    paid = sorted(KNOWN_EXCEPTIONS - set(graph.edges()))
    assert not paid, f"these upward imports are gone; drop them from KNOWN_EXCEPTIONS: {paid}"


def test_checks_and_errors_import_nothing_of_jaxvx():
    bottom = {a for a, f in FLOORS.items() if f == 0}
    assert not [edge for edge in graph.edges() if edge[0] in bottom]


# Inside a package the modules have an order too, bottom to top: each imports only modules before it in its list.
INSIDE = {
    "pipeline": ("_options", "_metrics", "_results", "_progress", "_clips", "_step", "_folder", "_lockstep", "_run", "_sweep"),
    "train": ("_recipes", "_step", "_data", "_state", "_card", "_loop", "_cli"),
}


def _sibling_imports(package: str, path):
    import ast

    prefix = f"jaxvx.{package}."
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            yield node.module[len(prefix):].split(".")[0]


def test_modules_inside_a_package_import_downward():
    problems = []
    for package, order in INSIDE.items():
        folder = graph.PACKAGE / package
        present = sorted(p.stem for p in folder.glob("_*.py") if p.stem not in ("__init__", "__main__"))
        if sorted(order) != present:
            problems.append(f"{package}: list its modules in INSIDE, bottom to top: {present} (listed {list(order)})")
            continue
        for name in order:
            for imported in _sibling_imports(package, folder / f"{name}.py"):
                if order.index(imported) >= order.index(name):
                    problems.append(f"jaxvx/{package}/{name}.py imports {imported}, which is not below it")
    assert not problems, "\n".join(problems)
