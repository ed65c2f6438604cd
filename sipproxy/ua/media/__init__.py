"""Media of the user agent: pure RTP, RTCP, G.711, DTMF, pacing and audio
file code (stdlib only, no Twisted), and one edge module, L{stream}, that
puts an RTP stream on a reactor UDP socket.

The pure modules can be used and tested without a reactor; only
L{sipproxy.ua.media.stream} imports Twisted.
"""
