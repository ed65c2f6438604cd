"""sipproxy: a SIP stack for Twisted.

A stateless proxy, a registrar, a NAT helper relaying RTP and a user-agent
layer, after the Perl library Net::SIP, as Twisted services. Start with
L{sipproxy.message} (parse and serialise), L{sipproxy.proxy}
(C{StatelessProxy}) and L{sipproxy.tap} (the C{twistd sipproxy} plugin).
"""

__version__ = "0.1.0"
