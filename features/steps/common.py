"""What the steps of a scenario share: the target and what the steps learnt."""


class Context:
    """A scenario's state: its target (through the plugin's scenario_bench) and the answers so far."""

    def __init__(self, hold):
        self.hold = hold
        self.answer = None
        self.error = None
        self.samples = []
        self.page_rows = None

    @property
    def target(self):
        return self.hold.target

    def use(self, bench):
        """The scenario runs on a bench of its own."""
        return self.hold.use(bench)

    def wait(self, seconds, condition):
        """Let time pass (simulated or real) until condition() holds or seconds have gone."""
        target = self.target
        step = 1.0 if target.simulated_time else 0.5
        waited = 0.0
        while waited <= seconds:
            if condition():
                return True
            target.advance(step)
            waited += step
        return condition()


def slot(battery):
    """The inverter's battery N is slot (DEYE unit) N - 1."""
    return battery - 1


def values(context, battery):
    return context.target.unit(slot(battery))["values"]
