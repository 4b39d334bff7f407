"""The steps of every feature, by subject.  Given builds state, When acts, Then only asserts
(a Then that waits "within N seconds" lets time pass and looks; it does not act).
Steps speak only to the target (hil/targets.py); features/conftest.py gathers them."""
