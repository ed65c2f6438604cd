"""sipproxy.sip.ids: random identifiers from a buffered pool of kernel
randomness, never handed out twice (not even across a fork)."""
from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip import ids
from sipproxy.sip.message import MAGIC_COOKIE
from tests.util import count_urandom_reads


class IdentifierTests(SynchronousTestCase):
    def test_shapes(self) -> None:
        self.assertRegex(ids.new_branch(), "^" + re.escape(MAGIC_COOKIE) + "[0-9a-f]{24}$")
        self.assertRegex(ids.new_tag(), "^[0-9a-f]{16}$")
        self.assertRegex(ids.new_cnonce(), "^[0-9a-f]{16}$")
        self.assertRegex(ids.new_call_id(), "^[0-9a-f]{32}$")
        self.assertRegex(ids.new_call_id("192.0.2.1"), "^[0-9a-f]{32}@192\\.0\\.2\\.1$")

    def test_unique_across_many_pool_refills(self) -> None:
        # 20000 tags are 160 kB: the 4 KiB pool is read again about 40 times
        tags = [ids.new_tag() for _ in range(20000)]
        self.assertEqual(len(set(tags)), len(tags))
        self.assertEqual(len({ids.new_branch() for _ in range(5000)}), 5000)

    def test_session_ids_are_62_bit_and_come_from_the_pool(self) -> None:
        # an SDP session id per call was one or two getrandom system calls
        # (secrets.randbelow), the only ones left in a call; now 1000 of
        # them are 8 kB of the pool, read in two or three blocks
        reads = count_urandom_reads(self)
        session_ids = [ids.new_session_id() for _ in range(1000)]
        self.assertTrue(all(0 <= value < 2**62 for value in session_ids))
        self.assertEqual(len(set(session_ids)), 1000)
        self.assertLessEqual(len(reads), 3)
        self.assertTrue(any(value >= 2**61 for value in session_ids))  # the top bit is used

    def test_a_forked_child_does_not_repeat_the_parent(self) -> None:
        if not hasattr(os, "fork") or not hasattr(os, "register_at_fork"):
            raise self.skipTest("needs os.fork and os.register_at_fork")
        ids.new_tag()  # the pool holds unused bytes now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next tag, then out at once
            try:
                os.write(write, ids.new_tag().encode())
            finally:
                os._exit(0)
        os.close(write)
        try:
            child = os.read(read, 64).decode()
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        parent = ids.new_tag()
        self.assertRegex(child, "^[0-9a-f]{16}$")
        self.assertNotEqual(child, parent)
