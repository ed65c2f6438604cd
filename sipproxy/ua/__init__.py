"""The user agent layer: endpoint, Simple, Call, and their media."""
