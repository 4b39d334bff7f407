Feature: Noise and bad CRCs on both buses are ignored, and nothing else breaks

  Background:
    Given the inverter reads every configured battery

  Scenario: noise before the inverter's requests
    When noise comes before the next 10 frames on the inverter bus
    And the bench runs for 10 seconds
    Then the inverter reads every configured battery without a warning

  Scenario: corrupted replies on the battery bus
    When the next 5 frames from BYD-2 on the battery bus are corrupted
    And the bench runs for 10 seconds
    Then the inverter reads every configured battery without a warning
