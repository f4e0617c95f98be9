"""pykaito.api."""
