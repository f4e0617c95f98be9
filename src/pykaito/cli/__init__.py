"""pykaito.cli."""
