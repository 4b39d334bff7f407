"""One small error hierarchy for every codec (see STYLE.md, "Errors").

RemoteProtocolError: the peer sent bytes we cannot accept.  Decoders raise
nothing else, whatever the input (the fuzzing invariant).
LocalProtocolError: we were asked to build something illegal.

Modbus exception *responses* are events, not Python exceptions.
"""


class ProtocolError(Exception):
    """Base class; carries where and what went wrong."""

    def __init__(self, message, raw=None, offset=None, function_code=None):
        super().__init__(message)
        self.message = message
        self.raw = raw
        self.offset = offset
        self.function_code = function_code

    def __str__(self):
        return self.message


class RemoteProtocolError(ProtocolError):
    """The bytes that arrived are not a valid frame of the protocol."""


class LocalProtocolError(ProtocolError):
    """The caller asked us to encode something the protocol does not allow."""
