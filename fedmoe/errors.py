"""The base class of the errors a user's input causes, which the command line reports in one
line with exit status 2 (:func:`fedmoe.cli.main`).

A :class:`UsageError` says what the user gave that is wrong: a config value, scenario, path,
option or file (its message names it and what is allowed). The specific ones —
:class:`fedmoe.config.ConfigError`, :class:`fedmoe.files.PathError`,
:class:`fedmoe.federated.resume.ResumeError`, :class:`fedmoe.data.deepsense.DeepSenseFormatError`,
:class:`fedmoe.deploy.pki.PKIError`, :class:`fedmoe.deploy.local.DeployArgumentError` — derive
from it. Any other exception is not the user's input: the command line lets it through (a
traceback) unless it is a failure while running it reports as one (status 1).

It is a :class:`ValueError`, as those errors always were, so code that catches ``ValueError``
still catches them.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user (a config value, scenario, path, option or file); ``str(err)`` is ready to print."""
