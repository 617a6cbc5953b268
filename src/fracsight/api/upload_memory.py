"""How many bytes of request bodies one server process holds at once.

Uploads are kept in memory (never on disk) from the first byte received until the answer is
made, while they wait for an inference slot too. Each request is bounded (``max_files`` x
``max_upload_bytes``), but without a bound on their sum enough concurrent clients would take
every byte of memory the process has; past it a request is refused with 503 ``server_busy`` and
a ``Retry-After``, and nothing else is disturbed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fracsight.api.errors import SERVER_BUSY, ApiError

__all__ = ["RETRY_AFTER_S", "UploadMemory"]

RETRY_AFTER_S = 2
MB = 1024 * 1024


class UploadMemory:
    """The bytes of request bodies held by this process, at most ``limit``. Used from the event
    loop's thread only (request bodies are read there), so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def account(self) -> Iterator[Callable[[int], None]]:
        """A function that counts ``n`` more bytes of one request's body as held (raising
        :class:`ApiError` 503 when they do not fit), all of them released when the block ends."""
        taken = 0

        def take(n: int) -> None:
            nonlocal taken
            if self.held + n > self.limit:
                raise ApiError(
                    503,
                    SERVER_BUSY,
                    f"the server is holding {self.held / MB:.0f} MB of uploads, its limit "
                    f"(FRACSIGHT_MAX_UPLOAD_MEMORY_BYTES {self.limit:,}): retry in a moment",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            self.held += n
            taken += n

        try:
            yield take
        finally:
            self.held -= taken
