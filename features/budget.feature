@slow
Feature: Fifteen mixed batteries: the poll cycle and the age of the data stay within budget

  Scenario: fifteen RS485 batteries
    Given a bench of fifteen mixed RS485 batteries
    When the bench runs for 30 seconds, noting each poll of the batteries
    Then a poll of every battery typically takes less than 1.5 times its wire time
    And the inverter reads all fifteen batteries without a warning
