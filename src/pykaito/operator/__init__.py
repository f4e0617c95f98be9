"""pykaito.operator."""
