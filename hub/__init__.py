"""The hub: a real-time customer master data (CMDM) syndication hub on Kafka and Redis."""

__version__ = "0.1.0"
