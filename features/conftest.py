"""The scenarios' fixtures and steps.  The target comes from the vbms pytest plugin (--target,
--bench; its scenario_bench fixture holds the bench); the steps, by subject, are in steps/."""

import pytest
from steps.batteries import *  # noqa: F403
from steps.benches import *  # noqa: F403
from steps.common import Context
from steps.day import *  # noqa: F403
from steps.device import *  # noqa: F403
from steps.inverter import *  # noqa: F403
from steps.wires import *  # noqa: F403


@pytest.fixture
def context(scenario_bench):
    return Context(scenario_bench)
