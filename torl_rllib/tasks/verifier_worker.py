"""Entry point of a verifier process: ``python -m torl_rllib.tasks.verifier_worker``.

Reads ``(answer, gold)`` frames on stdin and writes ``(verdict, parsed_gold)`` frames on stdout,
one at a time, until stdin closes. The parent bounds each comparison by killing this process,
so nothing here needs a timeout; :func:`main` only keeps the process alive through errors.
"""

from __future__ import annotations

import logging
import os
import resource
import signal

from torl_rllib.tasks.verifier_pool import READY, read_frame, write_frame

# A pathological answer should time out, not exhaust the host's memory first.
MEMORY_LIMIT_BYTES = 4 << 30


def main() -> None:
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol stream
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ValueError, OSError):
        pass  # a lower hard limit is already in place
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" is intended

    from torl_rllib.tasks.verifier import compare

    compare("1", "1")  # warm up the LaTeX parser before the first timed request
    write_frame(out_fd, READY)
    while True:
        try:
            answer, gold = read_frame(0)
        except EOFError:
            return
        try:
            result = compare(answer, gold)
        except Exception:  # noqa: BLE001 - a grading bug must not take the process down
            logging.getLogger(__name__).exception("verifier failed on answer %.200r", answer)
            result = ("parse_error", None)
        write_frame(out_fd, result)


if __name__ == "__main__":
    main()
