"""A pytest plugin that breaks the proxy on purpose: the staleness check is off."""

from vbms_core import deye

_original = deye.DeyeSlave.handle


def _never_stale(self, adu, now_us):
    self.stale_us = 10**15
    return _original(self, adu, now_us)


deye.DeyeSlave.handle = _never_stale
