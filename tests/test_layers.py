"""Imports flow downward only (ARCHITECTURE.md, "Layers"): a test walks the imports of every
module, function-level ones included, and fails on one that goes up or sideways a layer."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("vbms_core", "simulators", "hil", "firmware", "vbms_fw", "features", "tests")

# layer: (where its modules are, the packages of ours it may import)
RULES = {
    "core": (["vbms_core"], ("vbms_core",)),
    "simulators": (["simulators"], ("vbms_core", "simulators")),
    "host driver": (["hil/host"], ("vbms_core", "hil.host")),
    "firmware": (["firmware"], ("vbms_core", "vbms_fw", "firmware")),
    "firmware host stand-ins": (["firmware/host"], ("vbms_core", "vbms_fw", "firmware", "hil.host")),
    "harness": (["hil"], ("vbms_core", "simulators", "hil", "firmware", "vbms_fw")),
}
# the core runs on MicroPython: these are the only modules it may import that are not its own
CORE_EXTERNAL = ("json", "struct", "micropython")


def layer_of(relative):
    best = None
    for name, (folders, _) in RULES.items():
        for folder in folders:
            if relative.startswith(folder + "/") and (best is None or len(folder) > len(RULES[best][0][0])):
                best = name
    return best


def module_name(relative):
    parts = list(Path(relative).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(relative, text):
    """(line, absolute module name) of every import in a file's text."""
    tree = ast.parse(text, relative)
    name = module_name(relative)
    package = name if relative.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name))
    return found


def allowed(name, permitted):
    return any(name == allowed or name.startswith(allowed + ".") for allowed in permitted)


def sources():
    for folder in ("vbms_core", "simulators", "hil", "firmware"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def check(relative, text):
    """What in one file's imports goes against its layer's rule."""
    found = []
    layer = layer_of(relative)
    permitted = RULES[layer][1]
    for line, name in imports_of(relative, text):
        top = name.split(".")[0]
        where = "%s:%d" % (relative, line)
        if top in OURS:
            if not allowed(name, permitted):
                found.append("%s (%s) imports %s" % (where, layer, name))
        elif layer == "core" and top not in CORE_EXTERNAL:
            found.append("%s (core) imports %s, which is not its own nor on MicroPython" % (where, name))
    return found


def violations():
    found = []
    for path in sources():
        found += check(path.relative_to(ROOT).as_posix(), path.read_text())
    return found


def test_no_module_imports_up_a_layer():
    assert violations() == []


@pytest.mark.parametrize(
    "layer_folder, bad_import",
    [("simulators", "from hil.wires.ble import BleEnvironment"), ("hil/host", "from hil.sim import Simulation"),
     ("vbms_core", "import asyncio"), ("vbms_core", "from simulators.battery import BatteryModel")],
)  # fmt: skip
def test_the_check_sees_an_upward_import(layer_folder, bad_import):
    """The check itself can fail: an import planted in a module of the layer is reported."""

    def inside(text):
        return "def later():\n    " + text + "\n"  # a function-level import counts as much

    assert check(layer_folder + "/planted.py", bad_import + "\n")
    assert check(layer_folder + "/planted.py", inside(bad_import))
