"""Helpers shared by the integration and chaos tests."""
