Feature: Configuration through RPC

  Background:
    Given the inverter reads every configured battery

  Scenario: a change takes effect without a restart and survives a restart
    When the charge voltage of battery 2 is set to 56.4 V through RPC
    Then within 10 seconds the inverter reads a charge voltage of 56.4 V for battery 2
    When the configuration is saved and the VBMS restarts
    Then within 30 seconds the inverter reads a charge voltage of 56.4 V for battery 2

  Scenario: bad RPC input is refused and changes nothing
    When a charge voltage of 99 V is sent for battery 1 through RPC
    Then the RPC answers an error naming "bms0.voltage"
    When a charge voltage of 56 V is sent for battery 1 through RPC without the token
    Then the RPC answers an error with code 401
    And the charge voltage of battery 1 is still 55.2 V
