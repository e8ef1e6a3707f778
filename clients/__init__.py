"""The Flower app's client entry point for ``flwr run .`` (``[tool.flwr.app.components]`` in pyproject.toml).

The device side itself (the ClientApp and its message handlers) is the package :mod:`fedmoe.clients`; this
folder only names the ClientApp every SuperNode loads from the app bundle. Nothing in :mod:`fedmoe` imports
it, so a user's own package called ``clients`` does not clash with fedmoe.
"""
