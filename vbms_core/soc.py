"""A SOC for a battery that reports none (JK04 frames carry no SOC): estimated from the
average cell voltage on the open-circuit-voltage curve of its chemistry.  docs/soc.md.

estimate_soc(reading, chemistry) fills reading.soc_permille (and remaining_mah when the
capacity is known) when the source gave none, and sets reading.soc_estimated; chemistry
is one of config.CHEMISTRIES ("auto": detect_chemistry).
"""

from .compat import div_round
from .config import CHEMISTRIES

# Open-circuit voltage of one cell -> SOC, per chemistry: (cell mV, SOC permille)
# points in rising order, linear in between.  Source: Libre Solar BMS firmware,
# LibreSolar/bms-firmware @ 22f1e954ca843bd6942a017e3e01f5784b007be4,
# app/src/bms_common.c, ocv_lfp / ocv_nmc / ocv_lto: 21 points from 100 % down
# to 0 % in 5 % steps (its soc_default table prints 85 % where 75 % belongs; the
# steps are 5 %), the LTO curve citing DOI:10.3390/batteries5010031.
OCV_CURVES = {
    "lfp": (
        (2833, 0), (3132, 50), (3177, 100), (3190, 150), (3213, 200), (3226, 250), (3240, 300),
        (3252, 350), (3262, 400), (3264, 450), (3265, 500), (3268, 550), (3271, 600), (3275, 650),
        (3283, 700), (3296, 750), (3304, 800), (3308, 850), (3309, 900), (3314, 950), (3392, 1000),
    ),
    "nmc": (
        (2800, 0), (3588, 50), (3684, 100), (3702, 150), (3726, 200), (3745, 250), (3764, 300),
        (3787, 350), (3803, 400), (3819, 450), (3838, 500), (3858, 550), (3883, 600), (3924, 650),
        (3962, 700), (3993, 750), (4026, 800), (4056, 850), (4089, 900), (4135, 950), (4198, 1000),
    ),
    "lto": (
        (2000, 0), (2105, 50), (2125, 100), (2141, 150), (2154, 200), (2166, 250), (2177, 300),
        (2187, 350), (2198, 400), (2210, 450), (2224, 500), (2240, 550), (2259, 600), (2282, 650),
        (2309, 700), (2340, 750), (2376, 800), (2415, 850), (2458, 900), (2513, 950), (2800, 1000),
    ),
}  # fmt: skip

# detect_chemistry's rule.  Cell voltage limits from the same Libre Solar file
# (cell_uv_limit .. cell_ov_limit): LTO 1.90..2.85 V, LFP 2.50..3.80 V, NMC
# 3.00..4.25 V.  1. An average cell voltage above LFP's 3.80 V limit can only be
# NMC; one below LFP's 2.50 V limit (and NMC's 3.00 V) only LTO.  2. Between,
# the cell count of a DEYE low-voltage (48 V) pack decides: 13 or 14 cells at
# 3.00 V or more is NMC (13S/14S x 3.6-3.7 V nominal), 20 or more cells at
# 2.85 V or less is LTO (20S-24S x 2.3-2.4 V nominal).  3. Anything else is LFP
# (16S, 15S, 8S, 4S ...), the chemistry of most home-storage packs.
NMC_ONLY_ABOVE_MV = 3800
LTO_ONLY_BELOW_MV = 2500
NMC_CELL_COUNTS = (13, 14)
NMC_MIN_MV = 3000
LTO_MIN_CELLS = 20
LTO_MAX_MV = 2850


def average_cell_mv(cell_voltages_mv):
    """The mean cell voltage in mV, rounded half away from zero; None without cells."""
    if not cell_voltages_mv:
        return None
    return div_round(sum(cell_voltages_mv), len(cell_voltages_mv))


def detect_chemistry(cell_voltages_mv):
    """ "lfp", "nmc" or "lto" from the cell count and voltages (rule above); None without cells."""
    average = average_cell_mv(cell_voltages_mv)
    if average is None:
        return None
    count = len(cell_voltages_mv)
    if average > NMC_ONLY_ABOVE_MV:
        return "nmc"
    if average < LTO_ONLY_BELOW_MV:
        return "lto"
    if count in NMC_CELL_COUNTS and average >= NMC_MIN_MV:
        return "nmc"
    if count >= LTO_MIN_CELLS and average <= LTO_MAX_MV:
        return "lto"
    return "lfp"


def soc_from_ocv(cell_mv, chemistry):
    """SOC permille of a cell resting at cell_mv on the chemistry's curve, 0..1000."""
    curve = OCV_CURVES[chemistry]
    if cell_mv <= curve[0][0]:
        return curve[0][1]
    for index in range(1, len(curve)):
        high_mv, high_soc = curve[index]
        if cell_mv <= high_mv:
            low_mv, low_soc = curve[index - 1]
            return low_soc + div_round((cell_mv - low_mv) * (high_soc - low_soc), high_mv - low_mv)
    return curve[-1][1]


def estimate_soc(reading, chemistry="auto"):
    """Fill in a missing SOC from the average cell voltage; the reading, changed in place.

    Only when reading.soc_permille is None and the reading has cells.  chemistry
    is "auto" (detect_chemistry), "lfp", "nmc" or "lto".  Sets soc_estimated,
    and remaining_mah (when unknown) from full_charge_mah, else design_mah.
    The estimate is the open-circuit SOC: under load or charge current the cell
    voltage is off its rest value and the estimate with it.
    """
    if chemistry not in CHEMISTRIES:
        raise ValueError("unknown chemistry %r; choose one of %s" % (chemistry, ", ".join(CHEMISTRIES)))
    if reading.soc_permille is not None or not reading.cell_voltages_mv:
        return reading
    if chemistry == "auto":
        chemistry = detect_chemistry(reading.cell_voltages_mv)
    reading.soc_permille = soc_from_ocv(average_cell_mv(reading.cell_voltages_mv), chemistry)
    reading.soc_estimated = True
    capacity = reading.full_charge_mah if reading.full_charge_mah is not None else reading.design_mah
    if reading.remaining_mah is None and capacity is not None:
        reading.remaining_mah = capacity * reading.soc_permille // 1000
    return reading
