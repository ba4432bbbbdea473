"""Wire formats, stdlib only: the codec headers that stay in clear (VP8, Opus), the SFrame
header as the router reads it, and the session parameters with their floors.

Imported by every other layer; imports nothing of ours but :mod:`e2ee.errors`.
"""
