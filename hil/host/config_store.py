"""The configuration file: JSON, read with clear errors, saved atomically."""

import json
import os
import tempfile
from typing import Any

from vbms_core import config as config_module

from . import LogFunction

TEMPORARY_PREFIX = ".vbms-config-"


def parse_json(text: str | bytes | bytearray) -> Any:
    """JSON from a request body, frame or file; ValueError with a reason for anything unusable
    (not JSON, not UTF-8, nested too deep for the parser)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ValueError("not UTF-8 text (%s)" % error.reason) from None


def save_config_atomically(path: str, flat_config: dict[str, Any]) -> None:
    """Write, sync, rename: a power cut leaves the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(config_module.nest(flat_config), stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load_config(path: str, log: LogFunction) -> dict[str, Any]:
    """The validated config; a missing file gives the defaults.  Raises ConfigError / ValueError."""
    if not os.path.exists(path):
        log("config_missing", path=path, note="starting from the defaults")
        return config_module.defaults()
    with open(path, "rb") as stream:
        try:
            data = parse_json(stream.read())
        except ValueError as error:
            raise ValueError("%s is not valid JSON: %s" % (path, error)) from None
    return config_module.validate(data)


def remove_leftovers(path: str) -> list[str]:
    """Temporary files of saves that never finished (a killed process): each is a full copy
    of the configuration, token included, so they do not stay.  Returns their names."""
    directory = os.path.dirname(os.path.abspath(path))
    removed: list[str] = []
    for name in os.listdir(directory):
        if name.startswith(TEMPORARY_PREFIX):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed
