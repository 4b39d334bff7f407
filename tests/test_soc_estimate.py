"""JK04: the pack voltage as esphome computes it, and an SOC estimated from the cell voltages.

Expected values come from outside the code:
- esphome-jk-bms (syssi/esphome-jk-bms) tests/components/jk_bms_ble/jk_bms_ble_jk04_test.cpp,
  TotalVoltage: 53.691 V for CELL_INFO_JK04 of frames_jk04.h, which is the reference's frame B42;
- the open-circuit-voltage curves of the Libre Solar BMS firmware (LibreSolar/bms-firmware @
  22f1e954ca843bd6942a017e3e01f5784b007be4, app/src/bms_common.c: ocv_lfp, ocv_nmc, ocv_lto, 100 % down to
  0 % in 5 % steps), copied below by hand as the source prints them (volts);
- the chemistries the reference states or the frames' own settings imply.
The simulator's battery model (simulators/battery.py) has its own OCV table; it is not used here.
"""

import struct
from fractions import Fraction

import pytest
from conftest import JK_FRAMES
from hypothesis import given
from hypothesis import strategies as st

from vbms_core import battery, deye, jk_4e57, jk_frames, soc
from vbms_core.compat import f32_sum_scaled
from vbms_core.dissect import dissect

BY_ID = {f["id"]: bytes.fromhex(f["hex"]) for f in JK_FRAMES}

# Libre Solar bms_common.c, from 100 % down to 0 % in 5 % steps.
LIBRESOLAR_OCV_V = {
    "lfp": (3.392, 3.314, 3.309, 3.308, 3.304, 3.296, 3.283, 3.275, 3.271, 3.268, 3.265,
            3.264, 3.262, 3.252, 3.240, 3.226, 3.213, 3.190, 3.177, 3.132, 2.833),
    "nmc": (4.198, 4.135, 4.089, 4.056, 4.026, 3.993, 3.962, 3.924, 3.883, 3.858, 3.838,
            3.819, 3.803, 3.787, 3.764, 3.745, 3.726, 3.702, 3.684, 3.588, 2.800),
    "lto": (2.800, 2.513, 2.458, 2.415, 2.376, 2.340, 2.309, 2.282, 2.259, 2.240, 2.224,
            2.210, 2.198, 2.187, 2.177, 2.166, 2.154, 2.141, 2.125, 2.105, 2.000),
}  # fmt: skip
CURVE_POINTS = [
    pytest.param(chemistry, round(volts * 1000), 1000 - 50 * index, id="%s-%dmV" % (chemistry, round(volts * 1000)))
    for chemistry, points in LIBRESOLAR_OCV_V.items()
    for index, volts in enumerate(points)
]


def reading_with_cells(cells_mv, **slots):
    reading = battery.Reading("test")
    reading.cell_voltages_mv = tuple(cells_mv)
    for name, value in slots.items():
        setattr(reading, name, value)
    return reading


# --- JK04 pack voltage ------------------------------------------------------------------


def test_b42_is_the_esphome_jk04_test_frame():
    # first and last bytes of CELL_INFO_JK04 in esphome's frames_jk04.h
    assert BY_ID["B42"][:14] == bytes.fromhex("55AAEB9002C0FF9156407EF25640")
    assert BY_ID["B42"][-8:] == bytes.fromhex("0000004822400084")


def test_jk04_pack_voltage_is_the_float_sum_rounded_once():
    result = dissect("jk-ble", BY_ID["B42"])
    assert result["pack_voltage_mv"] == 53_691  # esphome: EXPECT_NEAR(total, 53.691f, 0.001f)
    assert sum(result["cell_voltages_mv"]) == 53_695  # the cells rounded first: what it must not be


finite_singles = st.integers(0, 0xFFFFFFFF).filter(lambda bits: (bits >> 23) & 0xFF != 0xFF)


@given(st.lists(finite_singles, max_size=24), st.sampled_from([1, 10, 1000]))
def test_f32_sum_scaled_is_the_exact_sum_rounded_half_away(bits_list, scale):
    exact = sum((Fraction(struct.unpack("<f", struct.pack("<I", bits))[0]) for bits in bits_list), Fraction(0))
    scaled = exact * scale
    magnitude = abs(scaled)
    rounded = int(magnitude) + (1 if magnitude - int(magnitude) >= Fraction(1, 2) else 0)
    assert f32_sum_scaled(bits_list, scale) == (rounded if scaled >= 0 else -rounded)


def test_f32_sum_scaled_refuses_nan_and_infinity():
    assert f32_sum_scaled([0x40400000, 0x7F800000], 1000) is None
    assert f32_sum_scaled([0x7FC00000], 1000) is None


# --- the curves -------------------------------------------------------------------------


@pytest.mark.parametrize("chemistry, cell_mv, soc_permille", CURVE_POINTS)
def test_estimate_on_the_curve_points(chemistry, cell_mv, soc_permille):
    reading = soc.estimate_soc(reading_with_cells([cell_mv] * 16), chemistry)
    assert reading.soc_permille == soc_permille
    assert reading.soc_estimated is True


@pytest.mark.parametrize(
    "chemistry, cell_mv, soc_permille",
    [
        ("nmc", 3693, 125),  # halfway between 3.684 V (10 %) and 3.702 V (15 %)
        ("lto", 2133, 125),  # halfway between 2.125 V (10 %) and 2.141 V (15 %)
        ("lfp", 3353, 975),  # halfway between 3.314 V (95 %) and 3.392 V (100 %)
    ],
)
def test_estimate_is_linear_between_the_points(chemistry, cell_mv, soc_permille):
    assert soc.estimate_soc(reading_with_cells([cell_mv] * 16), chemistry).soc_permille == soc_permille


@pytest.mark.parametrize("chemistry", ["lfp", "nmc", "lto"])
def test_estimate_is_monotonic_and_bounded(chemistry):
    values = [soc.soc_from_ocv(cell_mv, chemistry) for cell_mv in range(1000, 5001)]
    assert all(0 <= value <= 1000 for value in values)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[0] == 0 and values[-1] == 1000


def test_estimate_uses_the_average_cell():
    # 3.265 V is 50 % on the LFP curve; cells 3.260 and 3.270 average to it
    assert soc.estimate_soc(reading_with_cells([3260, 3270] * 8), "lfp").soc_permille == 500


def test_remaining_capacity_follows_the_estimate():
    full = soc.estimate_soc(reading_with_cells([3838] * 14, full_charge_mah=100_000, design_mah=120_000), "nmc")
    assert full.remaining_mah == 50_000  # 3.838 V NMC = 50 % of the full-charge capacity
    design = soc.estimate_soc(reading_with_cells([3838] * 14, design_mah=120_000), "nmc")
    assert design.remaining_mah == 60_000
    unknown = soc.estimate_soc(reading_with_cells([3838] * 14), "nmc")
    assert unknown.remaining_mah is None


def test_a_reported_soc_is_left_alone():
    reading = soc.estimate_soc(reading_with_cells([3265] * 16, soc_permille=120), "lfp")
    assert reading.soc_permille == 120 and reading.soc_estimated is False


def test_no_cells_no_estimate():
    reading = soc.estimate_soc(battery.Reading("test"), "auto")
    assert reading.soc_permille is None and reading.soc_estimated is False


def test_unknown_chemistry_is_refused():
    with pytest.raises(ValueError, match="auto, lfp, nmc, lto"):
        soc.estimate_soc(reading_with_cells([3300] * 16), "lead-acid")


# --- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame_id, chemistry",
    [
        ("U03", "nmc"),  # reference: "4E57 read-all response, 13 cells (Li-ion)"
        ("U02", "nmc"),  # 14 cells at 3.82 V: above any LFP rest voltage, a 14S Li-ion pack
    ],
)
def test_detection_on_real_4e57_frames(frame_id, chemistry):
    cells = jk_4e57.decode_response(BY_ID[frame_id])["cell_voltages_mv"]
    assert soc.detect_chemistry(cells) == chemistry


@pytest.mark.parametrize(
    "cells_id, settings_id",
    [
        ("R02", "R04"),  # JK-PB 16S, settings: cell OVP 3.65 V, UVP 2.7 V, 280 Ah: LFP
        ("B03", "B02"),  # JK-B2A24S20P 24S, settings: cell OVP 3.55 V, UVP 2.6 V: LFP
    ],
)
def test_detection_on_real_lfp_packs(cells_id, settings_id):
    settings = jk_frames.decode_frame(BY_ID[settings_id])
    assert settings["cell_ovp_mv"] <= 3650 and settings["cell_uvp_mv"] >= 2500  # LFP limits (Libre Solar: 2.5..3.8 V)
    assert soc.detect_chemistry(jk_frames.decode_frame(BY_ID[cells_id])["cell_voltages_mv"]) == "lfp"


@pytest.mark.parametrize(
    "cells_mv, chemistry",
    [
        ([3900] * 16, "nmc"),  # above LFP's 3.80 V limit
        ([2300] * 16, "lto"),  # below LFP's 2.50 V and NMC's 3.00 V limits
        ([3700] * 14, "nmc"),  # 14S Li-ion
        ([3700] * 13, "nmc"),  # 13S Li-ion
        ([2400] * 22, "lto"),  # 22S LTO
        ([2600] * 16, "lfp"),  # an almost empty 16S LFP
        ([3300] * 24, "lfp"),  # 24S LFP: too high for LTO
        ([], None),
    ],
)
def test_detection_rule(cells_mv, chemistry):
    assert soc.detect_chemistry(cells_mv) == chemistry


# --- end to end: a JK04 frame to the inverter ------------------------------------------


def test_a_jk04_battery_gets_an_estimated_soc_not_zero():
    reading = battery.from_jk(jk_frames.decode_frame(BY_ID["B42"]))
    assert reading.soc_permille is None  # JK04 frames carry no SOC
    soc.estimate_soc(reading, "auto")
    # 16 cells averaging 3.356 V: LFP, between 3.314 V (95 %) and 3.392 V (100 %)
    assert reading.soc_estimated is True
    assert reading.soc_permille == round(950 + (3356 - 3314) * 50 / (3392 - 3314))
    registers = deye.registers_from_reading(reading, 55_200, 100_000)
    assert registers[0x08] == reading.soc_permille  # the inverter's SOC register
