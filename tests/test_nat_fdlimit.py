"""The relay at the file-descriptor limit, on real sockets, in a child
process whose RLIMIT_NOFILE is lowered: an allocation that runs out of
descriptors half-way fails cleanly and leaves no socket behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.nat_util import free_udp_block

CHILD = r"""
import json, os, random, resource, sys
from twisted.internet import reactor
from sipproxy.nat.relay import LocalRelay
from sipproxy.nat.sessions import SessionKey
from sipproxy.sip.sdp import parse_sdp

low = int(sys.argv[1])
text = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\nm=audio 40002 RTP/AVP 0\r\nm=audio 40004 RTP/AVP 0\r\n")

def fds():
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # without listdir's own
    except OSError:  # no descriptor left even to look
        return -1

relay = LocalRelay(reactor, port_range=(low, low + 199), rng=random.Random(1))
before = fds()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (before + 9, hard))  # one call (6 sockets, the epoll set) and 2 more
results, counts = [], []
for n in range(3):
    key = SessionKey(f"c{n}", 1, "tag=F", "tag=T", "sip:a@x", "sip:b@y", "F", "T")
    try:
        got = relay.allocate_sockets(key, 0, "127.0.0.1", parse_sdp(text))
        results.append(None if got is None else len(got))
    except Exception as e:
        results.append(repr(e))
    counts.append(fds())
sockets = relay.socket_count
relay.close_all()
print(json.dumps({"results": results, "fds": counts, "socket_count": sockets, "after_close": fds(), "before": before}))
"""


class FileDescriptorLimitTests(SynchronousTestCase):
    def test_running_out_of_descriptors_half_way_leaks_nothing(self) -> None:
        if not os.path.isdir("/proc/self/fd"):
            raise SkipTest("needs /proc to count descriptors")
        low = free_udp_block("127.0.0.1", 200)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p))
        done = subprocess.run([sys.executable, "-c", CHILD, str(low)], capture_output=True, text=True, timeout=60,
                              env=env)
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        # the first call gets its 6 sockets (and the relay its epoll set); the
        # next two run out of descriptors half-way and give back what they opened
        self.assertEqual(report["results"], [3, None, None], done.stdout)
        self.assertEqual(report["fds"], [report["before"] + 7] * 3)
        self.assertEqual(report["socket_count"], 6)
        self.assertLessEqual(report["after_close"], report["before"] + 1)  # at most the epoll set
