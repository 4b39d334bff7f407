Feature: The inverter reads every battery through the VBMS
  The DEYE inverter polls units 0x00 to 0x0E; each configured battery answers with its own pack's values.

  Background:
    Given the inverter draws no power
    And the inverter reads every configured battery

  Scenario Outline: a battery's values reach the inverter, correctly scaled
    Then the inverter shows battery <battery> with the voltage and charge of its pack

    Examples:
      | battery |
      | 1       |
      | 2       |
      | 3       |
      | 4       |
      | 5       |
      | 6       |
      | 7       |
      | 8       |

  Scenario: the identity reply names each battery's model
    Then the inverter reads the model "BYD PRO 2.5" for battery 1
    And the inverter reads the model "JK_PB2A16S20P" for battery 5
    And the inverter reads the model "JK-B2A24S20P" for battery 7

  Scenario: units without a battery stay silent
    Then the inverter gets no answer from batteries 9 to 15
