"""Authoritative DNS nameserver for the .coop top-level domain."""

__version__ = "0.1.0"
