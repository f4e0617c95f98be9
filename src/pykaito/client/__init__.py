"""pykaito.client."""
