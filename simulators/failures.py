"""A device model's failure mode, shared by the BYD and JK models."""


class FailureModes:
    """The failure a device model acts out (None: healthy).  Set .failure directly (unchecked), or
    through set_failure (checked against FAILURES).  Any change lets go of the values a "stuck"
    device holds (_unstick); set_failure("stuck") takes them at once (_stick), a direct "stuck" at
    the device's next reply."""

    FAILURES: tuple[str, ...] = ()
    KIND = "device"  # for the error message
    _failure: str | None = None

    @property
    def failure(self) -> str | None:
        return self._failure

    @failure.setter
    def failure(self, failure: str | None) -> None:
        self._failure = failure
        self._unstick()

    def set_failure(self, failure: str | None) -> None:
        if failure is not None and failure not in self.FAILURES:
            raise ValueError("unknown %s failure %r; choose one of %s" % (self.KIND, failure, ", ".join(self.FAILURES)))
        self.failure = failure
        if failure == "stuck":
            self._stick()

    def _stick(self) -> None:
        """Keep the values of now for the replies to come."""

    def _unstick(self) -> None:
        """Let go of the values kept by _stick (or taken at the first reply after a direct "stuck")."""
