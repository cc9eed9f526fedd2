"""The soak's judge: which answers are expected (python -m unittest, from loadtest/soak/)."""

import unittest

from traffic import BURST, MIX, Rec, Traffic

KINDS = {k.name: k for k in MIX + [BURST]}


def judged(kind, status, outcome="ok", t0=100.0, t1=101.0, limits=True, retry_after=False):
    traffic = Traffic("http://x/v1", {"engine": "e", "upstream": "u"}, limits,
                      windows=[[200.0, 220.0]])
    rec = Rec("soak", kind, t0, t1, status, outcome, retry_after=retry_after)
    traffic.judge(KINDS[kind], rec)
    return rec.expected


class Judge(unittest.TestCase):
    def test_whole_answers_are_expected(self):
        for kind in KINDS:
            self.assertTrue(judged(kind, 200), kind)

    def test_a_cut_stream_is_expected_only_in_an_upstream_failure(self):
        self.assertFalse(judged("upstream-stream", 200, "truncated"))
        self.assertTrue(judged("upstream-stream", 200, "error-event", 210, 211))
        self.assertFalse(judged("engine-stream", 200, "error-event", 210, 211))

    def test_upstream_errors_only_for_the_upstream_model_in_a_window_plus_grace(self):
        self.assertTrue(judged("upstream-new", 502, t0=219, t1=221.5))
        self.assertTrue(judged("upstream-new", 503, t0=199.5, t1=200.5))
        self.assertFalse(judged("upstream-new", 502, t0=223, t1=224))
        self.assertFalse(judged("engine-new", 502, t0=210, t1=211))
        self.assertFalse(judged("engine-new", 503))

    def test_429_only_for_bursts_with_limits_on_and_retry_after(self):
        self.assertTrue(judged("burst", 429, retry_after=True))
        self.assertFalse(judged("burst", 429, retry_after=False))
        self.assertFalse(judged("burst", 429, limits=False, retry_after=True))
        self.assertFalse(judged("engine-hot", 429, retry_after=True))

    def test_transport_failures_are_unexpected(self):
        self.assertFalse(judged("engine-new", 0, "timeout"))
        self.assertFalse(judged("upstream-new", 0, "conn-error: ServerDisconnectedError", 210, 211))


if __name__ == "__main__":
    unittest.main()
