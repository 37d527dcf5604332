"""Shim so that tools that still call setup.py work; metadata lives in setup.cfg."""

from setuptools import setup

setup()
