"""The inverter's power profile: battery power over time, watts, positive = charging the batteries."""

import csv
import math

PROFILE_KINDS = ("constant", "day", "csv")


class PowerProfile:
    """Battery power over time, watts, positive = charging the batteries.

    kinds: constant (watts), day (a compressed day of solar and load: the sun
    charges around noon, the evening load discharges; day_length_s scales it),
    csv (a recorded profile of time_s,watts rows, repeated).
    """

    def __init__(
        self,
        kind: str = "constant",
        watts: float = 0.0,
        peak_solar_w: float = 3000.0,
        base_load_w: float = 800.0,
        day_length_s: float = 86400.0,
        path: str | None = None,
    ) -> None:
        if kind not in PROFILE_KINDS:
            raise ValueError("unknown power profile %r; choose constant, day or csv" % (kind,))
        self.kind = kind
        self.watts = watts
        self.peak_solar_w = peak_solar_w
        self.base_load_w = base_load_w
        self.day_length_s = day_length_s
        self.samples: list[tuple[float, float]] = []
        if kind == "csv":
            if path is None:
                raise ValueError("a csv power profile needs a path")
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.reader(handle):
                    if not row or row[0].startswith("#"):
                        continue
                    try:
                        self.samples.append((float(row[0]), float(row[1])))
                    except (ValueError, IndexError) as error:
                        raise ValueError("%s: bad row %r (want time_s,watts)" % (path, row)) from error
            if not self.samples:
                raise ValueError("%s holds no time_s,watts rows" % path)

    def watts_at(self, t_s: float) -> float:
        if self.kind == "constant":
            return self.watts
        if self.kind == "day":
            hour = 24.0 * (t_s % self.day_length_s) / self.day_length_s
            solar = self.peak_solar_w * max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
            load = self.base_load_w * (2.0 if 18 <= hour <= 23 else 1.0)
            return solar - load
        period = self.samples[-1][0] or 1.0
        t = t_s % period
        previous = self.samples[0]
        for sample in self.samples:
            if sample[0] > t:
                return previous[1]
            previous = sample
        return previous[1]
