@slow
Feature: Fifteen mixed batteries: every one reaches the inverter, and a poll round stays within budget

  Background:
    Given a bench of fifteen mixed RS485 batteries

  Scenario: fifteen RS485 batteries all reach the inverter
    When the bench runs for 30 seconds
    Then the inverter reads all fifteen batteries without a warning

  @des_only
  Scenario: a poll round of fifteen RS485 batteries stays within its wire time
    When the bench runs for 30 seconds, noting each poll of the batteries
    Then a poll of every battery typically takes less than 1.5 times its wire time
