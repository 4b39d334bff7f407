# Entry point on MicroPython: the runner mounts tests/parity at /parity and
# tests/golden at /golden.
import transcript

transcript.main("/golden", print)
