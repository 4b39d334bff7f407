@needs_browser
Feature: The dashboard shows what VBMS.GetSummary returns

  Background:
    Given the inverter reads every configured battery

  Scenario: the home page in a browser
    When the dashboard is opened in a browser
    Then it shows every battery with the voltage VBMS.GetSummary returns
