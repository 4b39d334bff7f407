import json
import time
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def load_jk_frames():
    return json.loads((GOLDEN / "jk_frames.json").read_text())["frames"]


def load_vectors():
    return json.loads((GOLDEN / "byd_deye_vectors.json").read_text())


JK_FRAMES = load_jk_frames()
VECTORS = load_vectors()


def frames_of(*kinds):
    return [pytest.param(frame, id=frame["id"]) for frame in JK_FRAMES if frame["kind"] in kinds]


def protocol_of(frame):
    return {"U": "jk-4e57", "R": "jk-pb"}.get(frame["id"][0], "jk-ble")


def wait_for(condition, timeout_s, step_s=0.25):
    """Poll condition() until it holds or timeout_s passes (real time); its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()
