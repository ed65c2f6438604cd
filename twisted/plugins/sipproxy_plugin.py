"""twistd plugin: ``twistd sipproxy --legs ...`` (see sipproxy.tap)."""
from twisted.application.service import ServiceMaker

sipproxy = ServiceMaker(
    "sipproxy", "sipproxy.tap", "SIP stateless proxy, registrar and NAT helper", "sipproxy"
)
