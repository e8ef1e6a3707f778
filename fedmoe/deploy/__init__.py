"""Real deployment on Flower's runtime (``flower-superlink``, ``flower-supernode``) with TLS and
SuperNode authentication.

:mod:`fedmoe.deploy.pki`
    CA, SuperLink certificate and SuperNode keys.
"""
