"""unison_sdk: the Python client for a unison-stream server.

Installs without torch. The client API (connect, say, interrupt, media iterators) follows
the server protocol in ``docs/protocol.md``; until the server lands this package only
carries its version, so that installing it and importing it is already tested.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
