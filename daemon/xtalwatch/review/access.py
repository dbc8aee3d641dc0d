"""Who may write: reads are open; a write needs a CSRF token always, and a login off loopback.

* Bound to loopback (``127.0.0.0/8``, ``::1``, ``localhost``): only this machine can reach the app, so
  every write is allowed without a login.
* Bound to any other address: every write (a label, promote, rollback) needs the token kept in
  ``web.token_file``, sent as ``Authorization: Bearer <token>`` or proven once through ``POST /login``,
  which sets a session cookie signed with this process's secret. With no token file configured the
  app is read-only there.
* Whatever the binding, a write carries the CSRF token the pages show in
  ``<meta name="csrf-token">`` (header ``X-CSRF-Token``, or the form field ``csrf_token``): a page on
  another site cannot read it, so it cannot make a browser write here (OWASP's synchroniser token).

Secrets are compared with ``hmac.compare_digest``. Both the CSRF token and the session signature
come from a per-process secret, so a restart signs everyone out, which is fine for a lab tool.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from pathlib import Path

from starlette.requests import Request

__all__ = ["Access", "is_loopback", "SESSION_COOKIE", "LABELLER_COOKIE", "CSRF_HEADER", "CSRF_FIELD"]

SESSION_COOKIE = "xtalwatch_session"
LABELLER_COOKIE = "xtalwatch_labeller"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def is_loopback(host: str | None) -> bool:
    """True for an address on this machine (127.0.0.0/8, ::1, IPv4 mapped into IPv6, ``localhost``)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


class Access:
    """The write rule of one app: built from the address it is bound to and ``web.token_file``."""

    def __init__(self, bound_host: str, token_file: Path | None, *, secret: bytes | None = None):
        self.bound_host = bound_host
        self.loopback = is_loopback(bound_host)
        self.token_file = token_file
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.csrf_token = hmac.new(self._secret, b"csrf", hashlib.sha256).hexdigest()

    # -- the token --------------------------------------------------------------------------
    def _token(self) -> tuple[str | None, str | None]:
        """(the token, None) or (None, why there is none). Read per write, so that a new token file applies at once."""
        if self.token_file is None:
            return None, (f"this app is bound to {self.bound_host}, not loopback, and web.token_file is not set, so "
                          "it is read-only: put a token in a file and set web.token_file to its path")
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            return None, f"web.token_file cannot be read ({exc.strerror or exc}), so writes are refused"
        if not token:
            return None, "web.token_file is empty, so writes are refused: put a token in it"
        return token, None

    def tokens_unavailable(self) -> str | None:
        """Why no token can be accepted (not configured, unreadable, empty), or None when one can."""
        return self._token()[1]

    def session_value(self) -> str | None:
        """The session cookie's value for the current token (None when there is no token)."""
        token, _ = self._token()
        if token is None:
            return None
        return hmac.new(self._secret, b"session:" + token.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        token, _ = self._token()
        return token is not None and hmac.compare_digest(given.strip().encode(), token.encode())

    # -- the rules ----------------------------------------------------------------------------
    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf_token.encode())

    def logged_in(self, request: Request) -> bool:
        """True when the request carries the bearer token or a valid session cookie."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            return self.token_matches(given)
        cookie = request.cookies.get(SESSION_COOKIE)
        expected = self.session_value()
        return bool(cookie) and expected is not None and hmac.compare_digest(cookie.encode(), expected.encode())

    def login_needed(self) -> bool:
        """True when writes here need a login (the app is not bound to loopback)."""
        return not self.loopback

    def refusal(self, request: Request, csrf_given: str | None) -> str | None:
        """Why this write is refused (one line), or None when it may go ahead."""
        if not self.csrf_ok(csrf_given):
            return ("missing or wrong CSRF token: send the token of <meta name=\"csrf-token\"> in the "
                    "X-CSRF-Token header (reload the page after a restart of the service)")
        if self.loopback:
            return None
        why_none = self.tokens_unavailable()
        if why_none is not None:
            return why_none
        if not self.logged_in(request):
            return (f"this app is bound to {self.bound_host}: writes need the token of web.token_file, as "
                    "'Authorization: Bearer <token>' or by logging in at /login")
        return None
