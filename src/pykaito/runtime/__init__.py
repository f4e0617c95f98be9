"""pykaito.runtime."""
