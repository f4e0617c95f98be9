"""pykaito.planner."""
