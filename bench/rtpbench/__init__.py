"""Helpers for bench/run_rtp.py, the RTP relay benchmark.

stdlib only, Linux only. The modules:

- ng:       a small bencode codec and a blocking ng-protocol client (offer/answer)
- procs:    child processes with a bounded life, stopped by PID; /proc readings
- gen:      building bench/rtpgen.c and talking to it
- relays:   how each relay is started and how a stream is set up through it
- measure:  one measurement (fresh relay, streams, warm-up, run, CPU, drops)
- sipcalls: real SIP calls through sipproxy --nathelper, for the SIP-under-load check
- report:   tables and ratios
"""
