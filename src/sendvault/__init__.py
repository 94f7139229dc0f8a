"""sendvault: a self-hosted token vault for Salesforce Marketing Cloud Tokenized Sending."""

__all__ = ["__version__"]
__version__ = "0.1.0.dev0"
