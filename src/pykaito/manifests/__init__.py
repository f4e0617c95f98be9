"""pykaito.manifests."""
