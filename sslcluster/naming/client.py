"""The wrapper around the ``openai`` client: key, base URL, timeout, retries with backoff, a cap on requests.

The openai client's own retries are switched off (``max_retries=0``) so that every HTTP request is counted
against ``naming.max_requests`` and the backoff is ours: on 429, 5xx, timeouts and connection errors wait
``backoff_s * 2**attempt`` (at most ``backoff_max_s``; a larger ``Retry-After`` from the server wins, within that
bound) and try again, up to ``retries`` more times. Other HTTP errors (400, 401, 404, ...) fail at once.
The client is shared by the worker threads (the openai client is thread-safe); the request counter is locked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import openai

from sslcluster.errors import SSLClusterError

log = logging.getLogger(__name__)


class NamingError(Exception):
    """One cluster could not be named; the message is recorded as that cluster's error."""


class RequestCapReached(NamingError):
    """``naming.max_requests`` requests were sent in this run; no more are allowed."""


@dataclass
class ClientSettings:
    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_requests: int = 200
    temperature: float | None = 0.2
    max_tokens: int | None = 200
    json_mode: bool = True

    def check(self) -> None:
        """Raise a one-line error naming the first invalid naming setting."""
        for key, value, low in (("timeout_s", self.timeout_s, 1e-9), ("retries", self.retries, 0),
                                ("backoff_s", self.backoff_s, 0), ("backoff_max_s", self.backoff_max_s, 0),
                                ("max_requests", self.max_requests, 0)):
            if value is None or value < low:
                raise SSLClusterError(f"naming.{key} must be {'positive' if low else 'non-negative'}, got {value}")
        if not self.model:
            raise SSLClusterError("naming.model is empty")


def missing_key_message(env: str) -> str:
    """The error text for a missing API key, naming the environment variable ``env``."""
    return (f"no API key for cluster naming: set the environment variable {env} (its name is naming.api_key_env; "
            "any non-empty value for a local server without keys), or pass naming.dry_run=true to see the "
            "requests without sending them")


def api_key(settings: ClientSettings) -> str | None:
    """The key from the environment variable ``settings.api_key_env``, or None."""
    return os.environ.get(settings.api_key_env) or None


def _retry_after(e: Exception) -> float | None:
    response = getattr(e, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _describe(e: Exception) -> str:
    if isinstance(e, openai.APITimeoutError):
        return "request timed out"
    if isinstance(e, openai.APIConnectionError):
        return f"connection failed ({e})"
    if isinstance(e, openai.APIStatusError):
        body = getattr(e, "message", "") or ""
        return f"HTTP {e.status_code}" + (f": {body[:120]}" if body else "")
    return f"{type(e).__name__}: {e}"


def request_kwargs(settings: ClientSettings, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The arguments of ``chat.completions.create`` (also what a dry run shows)."""
    kwargs: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.temperature is not None:
        kwargs["temperature"] = float(settings.temperature)
    if settings.max_tokens is not None:
        kwargs["max_tokens"] = int(settings.max_tokens)
    if settings.json_mode:
        kwargs["response_format"] = {"type": "json_object"}
    return kwargs


class NamingClient:
    """Sends chat-completion requests; :meth:`complete` returns the reply text or raises :class:`NamingError`."""

    RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                 openai.APIConnectionError)

    def __init__(self, settings: ClientSettings, key: str, sleep: Callable[[float], None] = time.sleep) -> None:
        settings.check()
        self.settings = settings
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        self._client = openai.OpenAI(api_key=key, base_url=settings.base_url or None,
                                     timeout=float(settings.timeout_s), max_retries=0)

    def _take_request(self) -> None:
        with self._lock:
            if self.requests_sent >= self.settings.max_requests:
                raise RequestCapReached(f"request cap reached (naming.max_requests={self.settings.max_requests})")
            self.requests_sent += 1

    def backoff(self, attempt: int, error: Exception | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        s = self.settings
        wait = min(s.backoff_s * (2 ** attempt), s.backoff_max_s)
        after = _retry_after(error) if error is not None else None
        if after is not None:
            wait = max(wait, min(after, s.backoff_max_s))
        return wait

    def request_kwargs(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The keyword arguments of the chat-completion request for ``messages``."""
        return request_kwargs(self.settings, messages)

    def complete(self, messages: list[dict[str, Any]]) -> str:
        """The text of the first choice; retries transient failures; raises :class:`NamingError`."""
        kwargs = self.request_kwargs(messages)
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            self._take_request()
            try:
                response = self._client.chat.completions.create(**kwargs)
            except self.RETRYABLE as e:
                if attempt + 1 >= attempts:
                    raise NamingError(f"{_describe(e)} (gave up after {attempts} attempts)") from None
                wait = self.backoff(attempt, e)
                log.info("naming request failed (%s); retrying in %.2fs", _describe(e), wait)
                self._sleep(wait)
                continue
            except openai.APIStatusError as e:
                raise NamingError(_describe(e)) from None
            except (openai.OpenAIError, ValueError) as e:  # a body that is not JSON, or not a completion
                raise NamingError(f"bad response from the server: {_describe(e)}") from None
            try:
                content = response.choices[0].message.content
            except (AttributeError, IndexError, TypeError):
                raise NamingError(f"bad response from the server: no choices in {str(response)[:120]!r}") from None
            if not isinstance(content, str):
                raise NamingError(f"bad response from the server: message content is {type(content).__name__}")
            return content
        raise NamingError("no attempt was made")  # unreachable: attempts >= 1
