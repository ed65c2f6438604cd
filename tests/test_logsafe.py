"""Log lines that carry undecodable text from a message can be written."""
from __future__ import annotations

import io

from twisted.logger import Logger, textFileLogObserver
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.observe.logsafe import SafeLogger, loggable

URI = b"sip:\xff\xfe@example.test".decode("utf-8", "surrogateescape")


class SafeLoggerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a log file is
        self.observer = textFileLogObserver(self.out)

    def written(self) -> str:
        self.out.flush()
        return self.out.buffer.getvalue().decode("utf-8")

    def test_undecodable_text_is_written_escaped(self) -> None:
        SafeLogger(observer=self.observer).info("refused {uri} from {source}", uri=URI, source=("192.0.2.1", 5060))
        text = self.written()
        self.assertIn("refused sip:\\udcff\\udcfe@example.test from ('192.0.2.1', 5060)", text)

    def test_a_plain_logger_cannot_write_it(self) -> None:
        """Why SafeLogger exists: Twisted disables an observer that raises."""
        with self.assertRaises(UnicodeEncodeError):
            Logger(observer=self.observer).info("refused {uri}", uri=URI)

    def test_ascii_and_other_values_pass_as_they_are(self) -> None:
        self.assertIs(loggable("plain"), "plain")
        self.assertEqual(loggable(5060), 5060)
        self.assertEqual(loggable("é"), "é")
