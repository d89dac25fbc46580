"""The desk kit: application logic every chat desk shares (Slack, Teams), with no platform
SDK imported. A desk translates between its platform and these pieces (issue 15)."""
