"""What runs on top of the library: the ``e2ee`` command (:mod:`~e2ee.tools.cli`), the
measured demo call, synthetic media that can be checked after a round trip, and the
benchmark harness (``e2ee bench``)."""
