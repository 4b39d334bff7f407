@des_only @slow
Feature: A day of solar charge and evening discharge

  Scenario: the batteries charge at noon, discharge in the evening, and the inverter never loses them
    Given a day of solar power
    And the simulation models what the inverter sees, and the rest only when it is read
    When the bench runs through the day
    Then every battery charged in the afternoon and discharged in the evening
    And every battery ends between 10 % and 100 % SOC
    And the inverter raised no communication warning during the day
