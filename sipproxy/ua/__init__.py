"""The user agent layer: endpoint, Simple, Call, and their media.

L{sipproxy.ua.endpoint} drives the transaction machines and dialogs of
L{sipproxy.sip} through a dispatcher; L{sipproxy.ua.simple} and
L{sipproxy.ua.call} are the Net::SIP::Simple-style API on top;
L{sipproxy.ua.cli} is the C{sipproxy-ua} command. The socket wiring is
L{sipproxy.app.ua}.
"""
