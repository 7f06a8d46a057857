"""The hostile fixtures' modes that end (loop and memory are checked on the built component)."""

import unittest

from framing import decode_output, encode_input, record
from hostile import Batch


def call(config, records):
    """init(config), then translate(records): ("init", message), ("batch", message) or outcomes."""
    batch = Batch()
    try:
        batch.init(config)
    except Exception as error:
        return "init", error.value
    try:
        return decode_output(batch.translate(encode_input(records)))
    except Exception as error:
        return "batch", error.value


class HostileTest(unittest.TestCase):
    def test_bad(self):
        records = [record(value=b"a bad one"), record(value=b"good"), record(value=None)]
        expected = [("err", 'value contains "bad"'), ("ok", [(b"k", b"good", [])]), ("ok", [(b"k", None, [])])]
        self.assertEqual(call("bad", records), expected)
        self.assertEqual(call("", records), expected)

    def test_raise(self):
        self.assertEqual(call("raise", [record(), record()]), [("err", "ValueError: boom")] * 2)

    def test_crash(self):
        self.assertEqual(call("crash", [record()]), ("batch", "crash: the whole batch fails"))

    def test_malformed_claims_one_outcome_too_many(self):
        Batch().init("malformed")
        output = Batch().translate(encode_input([record()]))
        self.assertEqual(output, b"\x02\x00\x00\x00" + Batch.runner.translate(encode_input([record()]))[4:])
        with self.assertRaises(AssertionError):
            decode_output(output)

    def test_huge(self):
        [(kind, outputs)] = call("huge", [record()])
        self.assertEqual((kind, len(outputs)), ("ok", 32))
        self.assertEqual(outputs[31][0], b"huge/31")
        self.assertEqual(sum(len(value) for _, value, _ in outputs), 32 << 20)
        [(kind, outputs)] = call("huge 1000 300", [record()])
        self.assertEqual([(k, len(v)) for k, v, _ in outputs], [(b"huge/0", 300), (b"huge/1", 300), (b"huge/2", 300), (b"huge/3", 100)])

    def test_reject_and_unknown_modes(self):
        self.assertEqual(call("reject", []), ("init", "configuration rejected: reject"))
        message = call("explode", [])
        self.assertEqual(message[0], "init")
        self.assertIn("unknown hostile mode 'explode'", message[1])
        self.assertEqual(call("huge x", [])[0], "init")
        self.assertEqual(call("huge 10 20", [])[0], "init")
        self.assertEqual(call("raise 1", [])[0], "init")


if __name__ == "__main__":
    unittest.main()
