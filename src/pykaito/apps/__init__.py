"""pykaito.apps."""
