"""The pure SIP layer: messages, URIs, SDP, digest math, keys, and (for the
user agent) transaction and dialog state machines.

Nothing here does I/O, reads a clock or imports Twisted: it parses, decides
and serialises; the layers above own sockets and timers.
"""

# message and fastparse import each other (fastparse builds message's
# classes, message re-exports fastparse's parse): load message first.
from sipproxy.sip import message as _message  # noqa: E402,F401
