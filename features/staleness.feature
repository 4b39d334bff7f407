Feature: A battery that stops answering disappears from the inverter, and comes back
  The VBMS must never serve old data: the inverter has to see the loss.

  Background:
    Given the inverter reads every configured battery

  Scenario: a silent BYD module disappears within the staleness limit and returns
    When BYD battery 3 stops answering
    Then within 20 seconds the inverter raises the communication warning for battery 3
    And the inverter still reads battery 2
    When BYD battery 3 answers again
    Then within 20 seconds the inverter reads battery 3 again

  Scenario: a BYD module that answers with bad checksums is not trusted
    When BYD battery 2 answers with bad checksums
    Then within 20 seconds the inverter raises the communication warning for battery 2
    When BYD battery 2 answers again
    Then within 20 seconds the inverter reads battery 2 again
