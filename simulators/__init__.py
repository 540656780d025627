"""Simulated devices and fleets, with faults and attacks, for the tests, benchmarks and demo."""
