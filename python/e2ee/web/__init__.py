"""The browser client's static files (ES modules under ``static/``), shipped as package data."""
