"""The desk kit: application logic every chat desk shares, with no platform SDK imported."""
