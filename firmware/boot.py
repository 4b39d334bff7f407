# Runs before main.py on every start.  Nothing to do before the firmware itself:
# the REPL stays on UART0 (the USB console); the RS485 ports are UART1 and UART2.
import gc

gc.collect()
