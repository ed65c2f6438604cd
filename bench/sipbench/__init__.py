"""Helpers for bench/run_sip.py, the SIP proxy benchmark harness (and
bench/workers_scaling.py, which reuses them).

stdlib only, Linux only (everything is read from /proc). The modules:

- procfs:  CPU (ticks, or the scheduler's count), memory, sockets and UDP
           drops of process trees, from /proc
- netplan: loopback-only addresses, scenarios and free ports
- peers:   how to start each proxy under test, and whether it is installed
- sipp:    sipp command lines, bounded runs and its statistics files
- step:    one measured run: proxy + sipp UAS + sipp UAC
- search:  the highest clean rate, stepping up then bisecting
- verify:  a tshark capture proving every datagram went through the proxy
- report:  tables, ratios and the raw TSV/JSON files
"""
