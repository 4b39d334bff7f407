@slow
Feature: Battery alarms reach the inverter's warning, protection and fault bits
  Every alarm a BMS raises must land on the DEYE bit that means the same thing.

  Background:
    Given the inverter reads every configured battery

  Scenario Outline: a BYD alarm becomes a DEYE warning
    When BYD battery 1 raises its <word> bit <bit>
    Then the inverter shows battery 1 with <deye_word> bit <deye_bit> set
    When BYD battery 1 clears its alarms
    Then the inverter shows battery 1 with no alarm bits

    Examples:
      | word    | bit | deye_word  | deye_bit |
      | alarm   | 2   | warning    | 0        |
      | alarm   | 5   | warning    | 1        |
      | alarm   | 0   | warning    | 2        |
      | alarm   | 6   | warning    | 4        |
      | alarm   | 12  | warning    | 11       |
      | protect | 2   | protection | 0        |
      | protect | 5   | protection | 1        |
      | protect | 14  | protection | 4        |
      | protect | 8   | protection | 6        |
      | fail    | 1   | fault      | 1        |

  Scenario Outline: a JK-BMS error becomes a DEYE bit
    When JK battery 5 raises its error bit <bit>
    Then the inverter shows battery 5 with <deye_word> bit <deye_bit> set

    Examples:
      | bit | deye_word  | deye_bit |
      | 4   | protection | 0        |
      | 11  | protection | 1        |
      | 7   | protection | 4        |
      | 1   | warning    | 10       |
      | 22  | fault      | 1        |
