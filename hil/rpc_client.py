"""One RPC call over HTTP to a device under test (vbms run, the firmware, a board): what the harness
and its benches use to reach `POST /rpc/<Method>` (GET without parameters)."""

import json
import urllib.error
import urllib.request
from typing import Any


def call(
    base_url: str, method: str, params: dict[str, Any] | None = None, token: str | None = None, timeout_s: float = 10
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body) of one call; an HTTP error status is a result, not an exception.
    A device that cannot be reached raises urllib.error.URLError or ConnectionError."""
    data = None if params is None else json.dumps(params).encode()
    request = urllib.request.Request("%s/rpc/%s" % (base_url, method), data=data, method="POST" if data else "GET")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
