"""aiortc glue that holds no key: which addresses ICE offers (:mod:`~e2ee.rtc.net`) and
every private aiortc name this project relies on, behind one version gate
(:mod:`~e2ee.rtc.compat`).  Shared by the router and the E2EE transform.
"""
