@needs_ble
Feature: VBMS.ScanBLE finds the JK modules around it

  Background:
    Given the inverter reads every configured battery

  Scenario: the scan lists every simulated JK module
    When the VBMS scans for Bluetooth devices
    Then every JK module of the bench is in the scan result
