"""Helpers shared by tests: sample messages and peer processes."""
