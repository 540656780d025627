"""Helpers shared by the server tests: a device-side HTTP client and a maker of real MP4 chunks."""
