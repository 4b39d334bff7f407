"""vbms_core: the portable VBMS proxy core.

Pure Python that runs unchanged on CPython 3.11+ and MicroPython 1.27+: no I/O,
no clock, no threads, no third-party imports.  Time always comes in as an
argument (integer microseconds unless a name says otherwise).
"""

__version__ = "0.1.0"
