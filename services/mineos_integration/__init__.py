"""A MineOS custom integration on Google Cloud: ingress, collector and their shared core."""
