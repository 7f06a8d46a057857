"""The SDK, natively: frames in and out, outcomes, exception semantics, init state."""

import struct
import unittest

from framing import decode_output, encode_input, record
from tributary_translator import (
    BatchError,
    MalformedInput,
    Outcome,
    Output,
    Record,
    Runner,
    Translator,
    batch_class,
    decode,
)


class Echo(Translator):
    """Every record out unchanged, with the configuration as an extra header."""

    def __init__(self, config):
        if config == "reject":
            raise ValueError("rejected")
        if config == "bug":
            raise KeyError("missing")
        self.config = config.encode()

    def translate(self, record):
        out = record.output()
        out.headers = out.headers + [("config", self.config)]
        return out


def run(translator_class, records, config=""):
    runner = Runner(translator_class)
    runner.init(config)
    return decode_output(runner.translate(encode_input(records)))


class DecodeTest(unittest.TestCase):
    def test_the_example_of_frames_md(self):
        data = bytes.fromhex(
            "01000000 01000000 74 01000000 00000000 00000000 0500000000000000"
            "ffffffffffffffff 01000000 01000000 00000000 6b 76"
        )
        self.assertEqual(decode(data), [Record("t", 0, 5, -1, b"k", b"v", [])])

    def test_absent_and_empty_are_different(self):
        records = [
            record(key=None, value=b""),
            record(key=b"", value=None),
            record(headers=[("null", None), ("empty", b""), ("x", b"y")]),
        ]
        decoded = decode(encode_input(records))
        self.assertEqual((decoded[0].key, decoded[0].value), (None, b""))
        self.assertEqual((decoded[1].key, decoded[1].value), (b"", None))
        self.assertTrue(decoded[1].is_tombstone)
        self.assertFalse(decoded[0].is_tombstone)
        self.assertEqual(decoded[2].headers, [("null", None), ("empty", b""), ("x", b"y")])

    def test_topics_coordinates_and_unicode(self):
        records = [
            record(topic="a", partition=3, offset=2**62, timestamp_ms=1_700_000_000_000),
            record(topic="é-topic", partition=-1, offset=-1, headers=[("clé", "ü".encode())]),
            record(topic="a", offset=7),
        ]
        decoded = decode(encode_input(records))
        self.assertEqual([r.topic for r in decoded], ["a", "é-topic", "a"])
        self.assertEqual(
            [(r.partition, r.offset, r.timestamp_ms) for r in decoded],
            [(3, 2**62, 1_700_000_000_000), (-1, -1, -1), (0, 7, -1)],
        )
        self.assertEqual(decoded[1].headers, [("clé", "ü".encode())])
        # The topic table is decoded once: records of one topic share the string.
        self.assertIs(decoded[0].topic, decoded[2].topic)

    def test_empty_batch(self):
        self.assertEqual(decode(encode_input([])), [])

    def test_malformed_input_fails_with_what_and_where(self):
        good = encode_input([record(headers=[("h", b"v")])])
        cases = [
            (b"", "the topic count is cut short, at byte 0"),
            (b"\x01\x00\x00\x00\x05\x00\x00\x00t", "topic 0 runs past the end, at byte 4"),
            (good[:-1], "header 0 of record 0 has a value that runs past the end"),
            (good[:20], "record 0 is cut short, at byte 13"),
            (good + b"\x00", "1 bytes left over after the last record"),
            # Topic index 1 of a table of one.
            (good[:13] + b"\x01" + good[14:], "record 0 names topic 1 of 1, at byte 13"),
            # A key length of NONE - 1.
            (good[:37] + b"\xfe\xff\xff\xff" + good[41:], "record 0 has a key that runs past the end, at byte 13"),
            # A header key that is not UTF-8.
            (good[:-2] + b"\xff" + good[-1:], "header 0 of record 0 has a name that is not UTF-8"),
            (b"\x01\x00\x00\x00\x01\x00\x00\x00\xff\x00\x00\x00\x00", "topic 0 has a name that is not UTF-8, at byte 4"),
        ]
        for data, expected in cases:
            with self.subTest(expected=expected):
                with self.assertRaises(MalformedInput) as caught:
                    decode(data)
                self.assertIn(expected, caught.exception.message)
                self.assertTrue(caught.exception.message.startswith("the translator's input is malformed: "))

    def test_a_header_key_of_none_length_is_malformed(self):
        data = encode_input([record(headers=[("h", None)])])
        at = data.rindex(b"h") - 8
        data = data[:at] + b"\xff\xff\xff\xff" + data[at + 4 :]
        with self.assertRaises(MalformedInput):
            decode(data)


class TranslateTest(unittest.TestCase):
    def test_round_trip(self):
        records = [
            record(key=None, value=b"keyless", headers=[("null", None), ("empty", b"")]),
            record(key=b"gone", value=None),
            record(key=b"", value=b""),
        ]
        self.assertEqual(
            run(Echo, records, "c"),
            [
                ("ok", [(None, b"keyless", [("null", None), ("empty", b""), ("config", b"c")])]),
                ("ok", [(b"gone", None, [("config", b"c")])]),
                ("ok", [(b"", b"", [("config", b"c")])]),
            ],
        )

    def test_every_result_shape(self):
        class Shapes(Translator):
            def translate(self, record):
                kind = record.value
                if kind == b"none":
                    return None
                if kind == b"empty-list":
                    return []
                if kind == b"many":
                    return [Output(b"1", b"a"), Output(None, None, [("h", None)]), Output(b"3", bytearray(b"c"))]
                if kind == b"tuple":
                    return (Output(b"t", b"u"),)
                if kind == b"outcome-ok":
                    return Outcome.ok([Output(b"o", b"k")])
                if kind == b"outcome-err":
                    return Outcome.err("exactly this")
                return Output(record.key, kind)

        values = [b"none", b"empty-list", b"many", b"tuple", b"outcome-ok", b"outcome-err", b"one"]
        self.assertEqual(
            run(Shapes, [record(value=v) for v in values]),
            [
                ("ok", []),
                ("ok", []),
                ("ok", [(b"1", b"a", []), (None, None, [("h", None)]), (b"3", b"c", [])]),
                ("ok", [(b"t", b"u", [])]),
                ("ok", [(b"o", b"k", [])]),
                ("err", "exactly this"),
                ("ok", [(b"k", b"one", [])]),
            ],
        )

    def test_an_exception_is_that_records_error(self):
        class Picky(Translator):
            def translate(self, record):
                if record.value == b"raise":
                    raise ValueError("boom")
                if record.value == b"bare":
                    raise RuntimeError
                if record.value == b"key":
                    return {}["missing"]
                if record.value == b"half":
                    # The first output is good: the error must remove it.
                    return [Output(b"k", b"v"), Output(b"k", "not bytes")]
                if record.value == b"wrong":
                    return 42
                if record.value == b"header":
                    return Output(b"k", b"v", [(b"bytes key", b"v")])
                return record.output()

        values = [b"raise", b"ok", b"bare", b"key", b"half", b"wrong", b"header"]
        self.assertEqual(
            run(Picky, [record(value=v) for v in values]),
            [
                ("err", "ValueError: boom"),
                ("ok", [(b"k", b"ok", [])]),
                ("err", "RuntimeError"),
                ("err", "KeyError: 'missing'"),
                ("err", "TypeError: an output value is str; expected bytes, bytearray or None"),
                (
                    "err",
                    "TypeError: translate returned int; expected None, an Output, a list of Output or an Outcome",
                ),
                ("err", "TypeError: a header key is bytes; expected str"),
            ],
        )

    def test_unicode_error_messages_are_utf8(self):
        class Unicode(Translator):
            def translate(self, record):
                if record.value == b"surrogate":
                    return Outcome.err("bad \udc80 byte")
                raise ValueError("clé «manquante»")

        self.assertEqual(
            run(Unicode, [record(), record(value=b"surrogate")]),
            [("err", "ValueError: clé «manquante»"), ("err", "bad ? byte")],
        )

    def test_batch_error_and_memory_error_fail_the_batch(self):
        class Fatal(Translator):
            def translate(self, record):
                if record.value == b"ok":
                    return None
                if record.value == b"batch":
                    raise BatchError("stop everything")
                raise MemoryError

        runner = Runner(Fatal)
        runner.init("")
        for value, expected in [(b"batch", "stop everything"), (b"memory", "MemoryError")]:
            with self.subTest(value=value):
                with self.assertRaises(BatchError) as caught:
                    runner.translate(encode_input([record(value=b"ok"), record(value=value)]))
                self.assertEqual(caught.exception.message, expected)

    def test_flat_map_shares_one_value(self):
        class Fan(Translator):
            def translate(self, record):
                return [Output(b"%d" % i, record.value) for i in range(3)]

        out = run(Fan, [record(value=b"x" * 1000)])
        self.assertEqual(out, [("ok", [(b"%d" % i, b"x" * 1000, []) for i in range(3)])])


class InitTest(unittest.TestCase):
    def test_translate_before_init(self):
        with self.assertRaises(BatchError) as caught:
            Runner(Echo).translate(encode_input([]))
        self.assertEqual(caught.exception.message, "init was not called")

    def test_failed_init_is_reported_by_translate_until_a_good_one(self):
        runner = Runner(Echo)
        runner.init("first")
        with self.assertRaises(BatchError) as caught:
            runner.init("reject")
        self.assertEqual(caught.exception.message, "rejected")
        # The previous translator is gone with the failed init.
        with self.assertRaises(BatchError) as caught:
            runner.translate(encode_input([]))
        self.assertEqual(caught.exception.message, "init failed: rejected")
        runner.init("second")
        out = decode_output(runner.translate(encode_input([record()])))
        self.assertEqual(out, [("ok", [(b"k", b"v", [("config", b"second")])])])

    def test_other_exceptions_in_init_name_their_type(self):
        with self.assertRaises(BatchError) as caught:
            Runner(Echo).init("bug")
        self.assertEqual(caught.exception.message, "KeyError: 'missing'")


class BatchClassTest(unittest.TestCase):
    def test_exported_class_raises_err_with_the_message(self):
        Batch = batch_class(Echo)
        with self.assertRaises(Exception) as caught:
            Batch().translate(encode_input([]))
        self.assertEqual(caught.exception.value, "init was not called")
        with self.assertRaises(Exception) as caught:
            Batch().init("reject")
        self.assertEqual(caught.exception.value, "rejected")
        # State is shared by every object of the class: componentize-py may make one per call.
        self.assertIsNone(Batch().init("c"))
        out = decode_output(Batch().translate(encode_input([record()])))
        self.assertEqual(out, [("ok", [(b"k", b"v", [("config", b"c")])])])
        with self.assertRaises(Exception) as caught:
            Batch().translate(b"\x00")
        self.assertIn("the translator's input is malformed", caught.exception.value)

    def test_output_is_bytes(self):
        # componentize-py lowers list<u8> from bytes only (a bytearray traps).
        Batch = batch_class(Echo)
        Batch().init("")
        self.assertIs(type(Batch().translate(encode_input([record()]))), bytes)
        self.assertIs(type(Batch().translate(encode_input([]))), bytes)


if __name__ == "__main__":
    unittest.main()
