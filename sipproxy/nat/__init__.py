"""Media relaying for the stateless proxy (Net::SIP's NATHelper).

  - L{sipproxy.nat.sessions}: which sessions a SIP packet opens, completes
    or closes (C{do_nat}), pure SIP logic over an C{INATHelper};
  - L{sipproxy.nat.relay}: L{LocalRelay}, the RTP relay on reactor UDP
    sockets;
  - L{sipproxy.nat.ng}: rtpengine's ng control protocol -- L{NgClient}, an
    C{INATHelper} driving a remote relay (rtpengine or our own), and
    L{NgServer}, which puts a L{LocalRelay} behind ng;
  - L{sipproxy.nat.bencode}: the ng protocol's encoding.

Only the names below are imported here; importing this package does not
import the reactor.
"""
from sipproxy.nat.ng import NgClient, NgServer, parse_ng_address
from sipproxy.nat.relay import LocalRelay, parse_port_range
from sipproxy.nat.sessions import NATSessions, SessionKey

__all__ = ["LocalRelay", "NATSessions", "NgClient", "NgServer", "SessionKey", "parse_ng_address",
           "parse_port_range"]
