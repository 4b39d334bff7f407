# The VBMS firmware starts here (docs/firmware.md).
from vbms_fw import app

app.run()
