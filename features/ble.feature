@needs_ble
Feature: JK-BMS over Bluetooth LE: link loss and reconnection

  Background:
    Given the inverter reads every configured battery

  Scenario: a lost link is reconnected and the battery comes back
    When the BLE link to battery 6 is lost
    Then within 30 seconds the VBMS has reconnected to battery 6
    And the inverter reads battery 6 without a warning

  Scenario: a module that refuses to reconnect disappears, then returns when it accepts
    When the BLE link to battery 5 is lost and the module refuses to reconnect
    Then within 30 seconds the inverter raises the communication warning for battery 5
    When the module of battery 5 accepts connections again
    Then within 60 seconds the inverter reads battery 5 again
