"""`vbms firmware build`: every module compiled by mpy-cross for the ESP32, the web files
gzipped, a manifest for freezing, the sizes printed; and the built tree runs (on the unix
port, which loads the same bytecode)."""

import gzip
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import needs_micropython
from peers import PtyEnds

from hil import cli, firmware

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("firmware") / "build"
    printed = io.StringIO()
    with redirect_stdout(printed):
        status = cli.main(["firmware", "build", "--out", str(out)])
    assert status == 0
    return out, printed.getvalue()


def test_every_module_that_goes_onto_the_board_is_compiled(built):
    out, _ = built
    tree = out / "tree"
    for package, directory in (("vbms_core", ROOT / "vbms_core"), ("vbms_fw", ROOT / "firmware" / "vbms_fw")):
        sources = sorted(p.stem for p in directory.glob("*.py"))
        assert sorted(p.stem for p in (tree / package).glob("*.mpy")) == sources
    for module in ("__init__", "microdot", "websocket", "helpers"):
        assert (tree / "microdot" / (module + ".mpy")).exists()
    for compiled in tree.rglob("*.mpy"):
        header = compiled.read_bytes()[:4]
        assert header[0:2] == b"M\x06", compiled  # .mpy version 6, what MicroPython 1.27 loads
        assert header[2] in (0, 10 << 2 | 3), compiled  # bytecode only, or native code for xtensawin (arch 10)
        assert header[3] == 31, compiled  # small ints of 31 bits, as on the ESP32
    # a board runs boot.py and main.py from source; nothing else is source in the tree
    assert sorted(p.name for p in tree.rglob("*.py")) == ["boot.py", "main.py"]


def test_the_web_files_are_gzipped_copies_and_the_manifest_freezes_the_sources(built):
    out, _ = built
    for name in firmware.WEB_FILES:
        assert (
            gzip.decompress((out / "tree" / "web" / (name + ".gz")).read_bytes()) == (firmware.WEB / name).read_bytes()
        )
    manifest = (out / "manifest.py").read_text()
    assert 'include("$(PORT_DIR)/boards/manifest.py")' in manifest
    for package in ("vbms_core", "vbms_fw", "microdot"):
        (files,) = re.findall(r'package\("%s", files=(\[.*?\]), base_path="src"\)' % package, manifest)
        for name in json.loads(files.replace("'", '"')):
            assert (out / "src" / package / name).is_file()


def test_the_sizes_are_printed(built):
    out, printed = built
    tree_total = sum(p.stat().st_size for p in (out / "tree").rglob("*") if p.is_file())
    assert "vbms_core/app.mpy" in printed
    assert re.search(r"tree total +%d B" % tree_total, printed), printed[-500:]


def test_a_directory_that_is_not_a_build_is_left_alone(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("mine")
    assert cli.main(["firmware", "build", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_deploy_and_flash_say_what_is_missing(tmp_path, capsys):
    assert cli.main(["firmware", "deploy", "--port", "/dev/null", "--tree", str(tmp_path)]) == 2
    assert "not a built tree" in capsys.readouterr().err
    assert cli.main(["firmware", "flash-micropython", "--port", "/dev/null", "--image", str(tmp_path / "x.bin")]) == 2
    assert "no image file" in capsys.readouterr().err


def test_the_built_tree_runs(built, tmp_path):
    needs_micropython()
    out, _ = built
    ends = PtyEnds()
    (tmp_path / "config.json").write_text(json.dumps({"rpc.auth_token": "t", "bms0.type": 1, "bms0.addr": "2"}))
    dut = firmware.start_host(str(tmp_path / "config.json"), ends.name("bms"), ends.name("inv"), tree=out / "tree")
    try:
        status, info = dut.rpc("Sys.GetInfo")
        assert status == 200 and info["slots"] == 1
        assert ends.read("bms", 8) == bytes.fromhex("020004010355AA07")  # BYD read, address 2 (golden BYD-Q2)
        started = [r for r in dut.log_records() if r["event"] == "started"]
        assert started, dut.log_records()
    finally:
        dut.stop()
        ends.close()
