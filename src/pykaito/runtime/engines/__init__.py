"""pykaito.runtime.engines."""
