"""``clients.app:app``: the ClientApp every SuperNode runs (:mod:`fedmoe.clients.app`)."""

from fedmoe.clients.app import app

__all__ = ["app"]
