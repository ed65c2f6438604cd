"""The transport edge: legs (UDP, TCP, TLS sockets as Twisted protocols),
leg specifications, the dispatcher that parses and routes what the legs
carry, and host name resolution."""
