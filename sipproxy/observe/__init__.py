"""What every layer above the pure one uses to be watched: the logger that
never silences an observer (L{logsafe}), the fields of a log line about a
SIP message (L{logfields}) and the labels of the counters Prometheus
reads (L{counters}). It imports only L{sipproxy.sip}, the interfaces and
C{twisted.logger}: never the reactor, logic, edges or wiring."""
