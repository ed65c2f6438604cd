"""twistd plugin: ``twistd sipproxy --legs ...`` (see sipproxy.app.tap)."""
from twisted.application.service import ServiceMaker

sipproxy = ServiceMaker(
    "sipproxy", "sipproxy.app.tap", "SIP stateless proxy, registrar and NAT helper", "sipproxy"
)
