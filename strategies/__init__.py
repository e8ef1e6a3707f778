"""The Flower app's server entry point for ``flwr run .`` (``[tool.flwr.app.components]`` in pyproject.toml).

The server side itself (strategies, ServerApps, reply validation) is the package :mod:`fedmoe.strategies`;
this folder only names the ServerApp Flower loads from the app bundle. Nothing in :mod:`fedmoe` imports it,
so a user's own package called ``strategies`` does not clash with fedmoe.
"""
