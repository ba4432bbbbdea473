"""Benchmarks: ``e2ee bench crypto`` (:mod:`e2ee.tools.bench.crypto`) and ``e2ee bench router``
(:mod:`e2ee.tools.bench.router`).  Speed is measured here, never in timed tests."""
