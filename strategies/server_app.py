"""``strategies.server_app:app``: the ServerApp ``flwr run .`` starts (:mod:`fedmoe.strategies.server_app`)."""

from fedmoe.strategies.server_app import app

__all__ = ["app"]
