"""Benchmarks: ``e2ee bench crypto`` (:mod:`e2ee.tools.bench.crypto`, measured by
``crypto_timing``, shown by ``crypto_report``) and ``e2ee bench router``
(:mod:`e2ee.tools.bench.router`, on ``router_rig``, ``router_processes`` and the
``router_worker`` load generators, shown by ``router_report``).  Speed is measured here,
never in timed tests."""
