@des_only @slow @soak
Feature: A week of days: the inverter loses no battery that answers
  A soak: seven days of sun and household load.  On a healthy bench the inverter never
  warns; with a battery that goes silent every night and a noisy battery bus, it warns
  about that battery while it is silent, and about nothing else.

  Scenario: a healthy bench runs a week without a communication warning
    Given a week of solar days
    And the simulation models what the inverter sees, and the rest only when it is read
    When the bench runs for 7 days
    Then the inverter raised no communication warning during the week
    And every battery charged and discharged on every day

  Scenario: a flaky battery warns only while it is silent, and a noisy bus warns not at all
    Given a week of solar days with noise before 1 % of the frames on the battery bus
    And the simulation models what the inverter sees, and the rest only when it is read
    And BYD battery 3 stops answering from 02:00 to 02:30 every night
    When the bench runs for 7 days
    Then the inverter warned about battery 3 in each of its silences, and about no other battery
    And each warning cleared within a minute of battery 3 answering again
