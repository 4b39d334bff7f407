"""The firmware's side of the driver contract (vbms_core.events.Executor): each action
against the board.  Answers that come later (a BLE connection, a scan) are posted to
the driver, never fed from inside a method."""

from vbms_core import events as ev

from . import store


class FirmwareExecutor(ev.Executor):
    """board: the running firmware (vbms_fw.app.Firmware): its ports, BLE, MQTT, driver, log."""

    def __init__(self, board):
        self.board = board

    def bms_write(self, action):
        port = self.board.bms_port
        if port is not None:
            port.write(action.data)

    def inv_write(self, action):
        port = self.board.inv_port
        if port is not None:
            port.write(action.data)

    def ble_connect(self, action):
        board = self.board
        if board.ble is None:
            board.driver.post(ev.BleConnectFailed(action.slot, "this board has no Bluetooth", 0))
        else:
            board.ble.connect(action.slot, action.address)

    def ble_write(self, action):
        if self.board.ble is not None:
            self.board.ble.write(action.slot, action.data)

    def ble_disconnect(self, action):
        if self.board.ble is not None:
            self.board.ble.disconnect(action.slot)

    def ble_scan(self, action):
        board = self.board
        if board.ble is None:
            board.driver.post(ev.BleScanResult([], 0))
        else:
            board.ble.scan(action.seconds)

    def publish(self, action):
        if self.board.mqtt is not None:
            self.board.mqtt.publish(action.topic, action.payload, action.retain)

    def save_config(self, action):
        try:
            store.save_config(action.config)
        except OSError as error:
            self.board.log("config_save_failed", level="error", path=store.CONFIG_FILE, error=str(error))
            return
        self.board.log("config_saved", path=store.CONFIG_FILE)

    def reboot(self, action):
        self.board.spawn(self.board.reboot())

    def rpc_reply(self, action):
        self.board.driver.answer(action.call_id, action.result, action.error)

    def log(self, action):
        self.board.log(action.event, level=action.level, **action.fields)
