"""Logging for every `gp8` command, configured once by the entry point (gp8/cli.py).

One line per event. ``json`` (the default of `gp8 serve`) is one JSON object a line, for a log
shipper: ``ts`` (ISO 8601, UTC), ``level``, ``logger`` (the module: ``gateway.auth``,
``api.requests``, ...), ``message``, then the event's context fields — ``request_id`` (from
the API's X-Request-ID, api/request_id.py), ``imei``, ``peer``, ``session_id``, ``key_prefix``
and whatever a module passes with ``extra=``. ``text`` is the classic human-readable line, for
the demo and the command-line tools.

The formatter is python-json-logger's (a well-kept library: exceptions, extras and non-JSON
values handled); what is ours is the context and the redaction, in two filters on the one
handler, so they apply to every logger alike, third-party ones included:

- ``_ContextFilter`` adds the request id of the request being served and the box session id
  of the TCP connection being served (gateway/connection.py), and lifts ``imei=`` /
  ``peer=`` out of messages written as ``"imei=%s peer=%s ..."`` (the gateway's and command
  service's style) so they can be filtered on as fields.
- ``_RedactFilter`` is the last guard against a secret reaching a log: a gp8 API key in a
  message or a field is cut down to its shown prefix, and fields named like secrets
  (``secret``, ``password``, ``authorization``, ``token``) are replaced. Nothing in gp8 logs
  those on purpose; the filter is there for the day something does by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Literal, TextIO, cast

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LIFTED = re.compile(r"\b(imei|peer)=([^\s,;]+)")
# A gp8 API key (api.security.generate_key: "gp8_" and 43 URL-safe characters), cut to the
# prefix key listings show (api.security.SHOWN_PREFIX_LEN). Not imported from there so that
# the tools (`gp8 sim`, `gp8 decode`) need not load FastAPI; tests/gp8/test_logs.py pins both.
_KEY = re.compile(r"gp8_[A-Za-z0-9_-]{20,}")
SHOWN_PREFIX_LEN = 12
_SECRET_FIELDS = frozenset({"secret", "password", "authorization", "token", "api_key"})
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with every gp8 API key cut to its shown prefix."""
    return _KEY.sub(lambda m: m.group(0)[:SHOWN_PREFIX_LEN] + "...", text)


def _current_request_id() -> str | None:
    # Only a process that loaded the API can be serving a request; the tools never load it.
    module = sys.modules.get("api.request_id")
    return None if module is None else cast(str | None, module.current_request_id())


def _current_session_id() -> str | None:
    # Likewise: only a process running the gateway serves box sessions.
    module = sys.modules.get("gateway.connection")
    return None if module is None else cast(str | None, module.current_session_id())


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = _current_request_id()
            if request_id is not None:
                record.request_id = request_id
        if getattr(record, "session_id", None) is None:
            session_id = _current_session_id()
            if session_id is not None:
                record.session_id = session_id
        if isinstance(record.msg, str) and "=" in record.msg:
            for name, found in _LIFTED.findall(record.getMessage()):
                value = found.rstrip(":")  # "peer=1.2.3.4:5678: ..." keeps its port
                if value not in ("", "-", "None") and getattr(record, name, None) is None:
                    setattr(record, name, value)
        return True


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for name, value in list(vars(record).items()):
            if name in _SECRET_FIELDS:
                setattr(record, name, REDACTED)
            elif isinstance(value, str) and name not in ("msg", "message") and _KEY.search(value):
                setattr(record, name, redact(value))
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="ts",
        # uvicorn's copy of the message with terminal colour codes: noise in a log store.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


class _GP8Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler gp8 installed, so configuring again replaces it (tests, the demo)."""


def configure_logging(
    *,
    level: str = "info",
    levels: Mapping[str, str] | None = None,
    fmt: LogFormat = "json",
    stream: TextIO | None = None,
) -> logging.Handler:
    """One handler on the root logger for every gp8 and library logger; ``levels`` sets a
    level per component (logger name: ``gateway``, ``gateway.mqtt``, ``api.requests``,
    ``uvicorn``, ...) over ``level``. Returns the handler (tests read its stream)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GP8Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _GP8Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_ContextFilter())
    handler.addFilter(_RedactFilter())
    root.addHandler(handler)
    root.setLevel(_level(level))
    for name, component_level in (levels or {}).items():
        logging.getLogger(name).setLevel(_level(component_level))
    return handler


def _level(name: str) -> int:
    value = logging.getLevelName(name.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}: debug, info, warning, error or critical")
    return value
