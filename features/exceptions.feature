Feature: Out-of-range and unknown requests get the right Modbus exception

  Background:
    Given the inverter reads every configured battery

  Scenario Outline: a bad request to battery 1
    When the inverter reads <count> registers at <address> with function <function> from battery 1
    Then the answer is exception <code>

    Examples:
      | address | count | function | code |
      | 0x1018  | 2     | 4        | 2    |
      | 0x0FFF  | 1     | 4        | 2    |
      | 0x1000  | 126   | 4        | 3    |
      | 0x1000  | 10    | 3        | 1    |

  Scenario: a good partial read
    When the inverter reads 5 registers at 0x1014 with function 4 from battery 1
    Then the answer holds 5 registers starting with the charge voltage
