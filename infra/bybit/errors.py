"""The exchange error tree. Every call into infra/bybit raises only these.

    ExchangeError
    +-- TransientError       may succeed if repeated (timeout, 5xx, connection)
    |   +-- RateLimited      retCode 10006; `retry_after_s` from X-Bapi-Limit-Reset-Timestamp
    |   +-- NoAnswer         the request may have been carried out, no answer came back
    |   |                    (read timeout, dropped connection, 5xx, retCode 10000/10016)
    |   +-- MalformedResponse  an answer that does not parse as the venue's documented shape
    +-- IpBanned             HTTP 403: stop every request until `until_monotonic`
    +-- Rejected             the venue said no (retCode != 0); repeating will not help
    +-- OutcomeUnknown       an order request whose fate is unknown (sent, no answer):
    |                        resolve by looking the order up by its orderLinkId
    +-- OrderRefused         the gateway refused a request before sending it (below the
                             minimum, venue/mode mismatch, ...): nothing left the process

Callers decide what to retry: reads retry TransientError with backoff;
order creates never blindly retry (OutcomeUnknown must be resolved first).
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base of every error raised by the exchange layer."""

    def __init__(self, message: str, *, endpoint: str | None = None):
        self.endpoint = endpoint
        super().__init__(message if endpoint is None else f"{endpoint}: {message}")


class TransientError(ExchangeError):
    """Timeout, dropped connection, 5xx or the like: worth repeating after a pause."""

    def __init__(self, message: str, *, endpoint: str | None = None, retry_after_s: float | None = None):
        self.retry_after_s = retry_after_s
        super().__init__(message, endpoint=endpoint)


class RateLimited(TransientError):
    """retCode 10006 (too many visits). `retry_after_s` says when the bucket resets."""


class IpBanned(ExchangeError):
    """HTTP 403: the IP is banned for minutes. Everything pauses until `until_monotonic`."""

    def __init__(self, message: str, *, endpoint: str | None = None, until_monotonic: float | None = None):
        self.until_monotonic = until_monotonic
        super().__init__(message, endpoint=endpoint)


class Rejected(ExchangeError):
    """The venue answered with a non-zero retCode that repeating will not change."""

    def __init__(self, ret_code: int, ret_msg: str, *, endpoint: str | None = None):
        self.ret_code = ret_code
        self.ret_msg = ret_msg
        super().__init__(f"retCode {ret_code}: {ret_msg}", endpoint=endpoint)


class OutcomeUnknown(ExchangeError):
    """An order request was sent and no answer came back: it may or may not exist."""

    def __init__(self, message: str, *, order_link_id: str, endpoint: str | None = None):
        self.order_link_id = order_link_id
        super().__init__(message, endpoint=endpoint)


class NoAnswer(TransientError):
    """Sent, but no usable answer: the venue may have carried the request out.

    For reads this is just transient. For an order create it is the
    ambiguous outcome: the gateway resolves it by orderLinkId.
    """


class MalformedResponse(TransientError):
    """The venue answered something that is not its documented shape."""


class OrderRefused(ExchangeError):
    """Refused inside the process, before any byte was sent. `reason` is a stable code."""

    def __init__(self, reason: str, detail: str, *, endpoint: str | None = None):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}", endpoint=endpoint)
