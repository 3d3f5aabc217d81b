"""Workbench: run, tune and understand local language models."""

__version__ = "0.1.0"
