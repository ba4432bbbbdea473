"""How the ``e2ee`` command fails: one line on stderr, saying what went wrong and what to
do, and an exit code (2: the command line is wrong, 1: the command failed, 128 + N: signal
N).  ``--debug`` shows the traceback instead.

* :class:`CommandError` is a failure the user can act on; its text is the whole message.
* :class:`Parser` prints argparse's usage errors as one line too.
* :func:`run_async` runs a command's coroutine so that SIGTERM and SIGHUP, like Ctrl-C,
  cancel it: its ``finally`` blocks stop child processes and remove temporary files
  before the command exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

__all__ = [
    "CommandError",
    "Parser",
    "Terminated",
    "UsageError",
    "configure_logging",
    "install_hint",
    "require_extra",
    "run_async",
    "run_command",
]

T = TypeVar("T")

#: Which extra of the e2ee-media package brings a missing module.
_EXTRA_OF = {
    "aiohttp": "server",
    "aiortc": "server",
    "av": "server",
    "jwt": "server",
    "cryptography": "bench",
    "matplotlib": "bench",
    "playwright": "test",
    "redis": "cluster",
}


class CommandError(Exception):
    """A failure the user can act on; ``str(exc)`` is the line to print (without the
    ``e2ee:`` prefix)."""

    exit_code = 1


class UsageError(CommandError):
    """Options that argparse cannot check alone do not go together (exit code 2)."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a command ran (raised after its cleanup)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit code 2), and ``--debug`` accepted by
    every command and subcommand, wherever it is written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand that does not see the flag keeps the value set before it.
        self.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="on failure, show the traceback; log at DEBUG level",
        )

    def add_verbose(self) -> None:
        """``--verbose``, for the commands whose library log lines are hidden."""
        self.add_argument(
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the library's log lines (INFO and above) on stderr",
        )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def install_hint(exc: ModuleNotFoundError, what: str) -> str:
    """The line for a missing optional dependency: which extra to install, and how."""
    name = (exc.name or "?").split(".")[0]
    extra = _EXTRA_OF.get(name)
    if extra is None:
        return f"{what} needs the Python module {name!r}, which is not installed"
    return (
        f"{what} needs {name}, from the {extra!r} extra: pip install -e '.[{extra}]' in a "
        f"checkout of e2ee (or install the wheel with [{extra}])"
    )


def require_extra(extra: str, what: str) -> None:
    """Fails with the install hint unless the modules of ``extra`` are importable."""
    import importlib.util

    modules = [m for m, e in _EXTRA_OF.items() if e == extra]
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # an import hook may refuse rather than not find
            found = False
        if not found:
            raise CommandError(install_hint(ModuleNotFoundError(name=name), what))


def configure_logging(*, verbose: bool, debug: bool) -> None:
    """Logging for the commands that are clients (``demo``, ``session``): the library's
    lines (an expected ``encryption_secret_mismatch`` warning, ICE progress) would bury
    the command's own output, so only errors show unless ``--verbose`` or ``--debug``."""
    level = logging.INFO if verbose or debug else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if debug:
        logging.getLogger("e2ee").setLevel(logging.DEBUG)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, where SIGTERM and SIGHUP cancel ``coro`` as Ctrl-C does
    (its cleanup runs), then raise :class:`Terminated`.  Later signals are ignored
    while it cleans up (the cleanup has its own timeouts)."""
    received: list[int] = []

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        signals = (signal.SIGTERM, signal.SIGHUP)
        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await coro
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if received:
            raise Terminated(received[0]) from None
        raise


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs a command; every failure becomes one line on stderr and an exit code."""
    if getattr(args, "debug", False):
        return func(args)  # tracebacks wanted
    what = f"e2ee {args.command}"
    try:
        return func(args)
    except UsageError as exc:  # as argparse would say it (Parser.error)
        print(f"{what}: {exc} (see `{what} --help`)", file=sys.stderr, flush=True)
        return exc.exit_code
    except CommandError as exc:
        return _fail(str(exc), exc.exit_code)
    except ModuleNotFoundError as exc:
        return _fail(install_hint(exc, what), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 128 + signal.SIGINT)
    except BrokenPipeError:
        # The reader left (`| head`): no message; stdout is dropped so that the flush
        # at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Terminated as exc:
        return _fail(f"stopped by {exc}", 128 + exc.signum)
    except Exception as exc:
        return _fail(
            f"{what} failed: {type(exc).__name__}: {exc} (run it again with --debug "
            "for the traceback)",
            1,
        )


def _fail(message: str, code: int) -> int:
    print(f"e2ee: {message}", file=sys.stderr, flush=True)
    return code
