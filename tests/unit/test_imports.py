"""A process that only serves and routes media never loads the crypto core.

The router reads clear codec bytes and SFrame headers; it holds no key, and with the
package loading lazily it does not even load the code that could derive one.
"""

from __future__ import annotations

import subprocess
import sys

CRYPTO = (
    "e2ee._core",
    "e2ee.crypto",
    "e2ee.sframe",
    "e2ee.crypto.keyring",
    "e2ee.crypto.frames",
    "e2ee.crypto.sframe",
    "e2ee.transform.protect",
)


def _loaded_after(code: str) -> set[str]:
    # A fresh interpreter (not pytest-asyncio): this process has long loaded every module,
    # and the probe's own ``asyncio.run`` is the whole program a server would run.
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in sys.modules if m.startswith('e2ee')))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_server_and_router_do_not_load_the_crypto_core(tmp_path: object) -> None:
    loaded = _loaded_after(
        "import asyncio, tempfile\n"
        "import e2ee.server.app, e2ee.sfu.router\n"
        "from e2ee.sfu.router import Router\n"
        "async def main():\n"
        "    app = await e2ee.server.app.create_app(tempfile.mkdtemp())\n"
        "    r = Router(e2ee=True)\n"
        "    await r.close()\n"
        "asyncio.run(main())"
    )
    assert "e2ee.sfu.router" in loaded
    assert "e2ee.server.app" in loaded
    assert not loaded & set(CRYPTO), loaded & set(CRYPTO)


def test_the_routers_srtp_sender_is_not_the_crypto_core() -> None:
    # e2ee._srtp (the router's SRTP sender, hop-by-hop DTLS-SRTP keys) is its own
    # extension: using it loads neither e2ee._core nor any key handling.
    loaded = _loaded_after(
        "import e2ee.sfu.egress\n"
        "from e2ee.rtc import srtp\n"
        "from e2ee import _srtp\n"
        "s = _srtp.SrtpSender('SRTP_AEAD_AES_256_GCM', bytes(32), bytes(12))\n"
        "assert s.protect_frame(0x80, 96, 0, 0, 1, b'', [b'x'])"
    )
    assert {"e2ee._srtp", "e2ee.rtc.srtp", "e2ee.sfu.egress"} <= loaded
    assert not loaded & set(CRYPTO), loaded & set(CRYPTO)


def test_the_serve_command_does_not_load_it_either() -> None:
    loaded = _loaded_after(
        "import e2ee.tools.cli\n"
        "parser = e2ee.tools.cli.build_parser()\n"
        "args = parser.parse_args(['serve', '--port', '0'])\n"
        "import e2ee.server.app"
    )
    assert not loaded & set(CRYPTO), loaded & set(CRYPTO)


def test_the_facade_still_offers_everything() -> None:
    loaded = _loaded_after(
        "import e2ee\n"
        "assert e2ee.KeyRing and e2ee.FrameEncryptor and e2ee.sframe.CipherSuite(6)\n"
        "from e2ee import derive_secret_key, DecryptorEvent\n"
        "assert set(e2ee.__all__) <= set(dir(e2ee))"
    )
    assert {
        "e2ee._core",
        "e2ee.crypto.keyring",
        "e2ee.crypto.frames",
        "e2ee.crypto.sframe",
    } <= loaded
