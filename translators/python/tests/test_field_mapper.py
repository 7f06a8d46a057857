"""The Python field-mapper gives the Rust one's outputs and errors (translators/examples/
field-mapper/src/lib.rs has the same cases)."""

import json
import unittest

from field_mapper import FieldMapper
from framing import decode_output, encode_input, record
from tributary_translator import Outcome, Output, Record, Runner

CONFIG = '{"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}'


def source(key, value):
    return Record("assignments", 0, 0, -1, key, value, [("h", None)])


def mapped(config, value):
    """The value that ``config`` makes of ``value``, or the record's error message."""
    out = FieldMapper(config).translate(source(None, value))
    return out.error if isinstance(out, Outcome) else out.value


class FieldMapperTest(unittest.TestCase):
    def test_renames_drops_and_prefixes(self):
        out = FieldMapper(CONFIG).translate(
            source(b"assignment/7", b'{"id":7,"station":"north","status":"on-air","version":3}')
        )
        self.assertEqual(
            out,
            Output(b"b/assignment/7", b'{"assignment_id":7,"location":"north","status":"on-air"}', [("h", None)]),
        )

    def test_tombstones_stay_tombstones_and_keyless_stays_keyless(self):
        mapper = FieldMapper(CONFIG)
        self.assertEqual(mapper.translate(source(b"assignment/7", None)), Output(b"b/assignment/7", None, [("h", None)]))
        self.assertEqual(mapper.translate(source(None, b"{}")), Output(None, b"{}", [("h", None)]))

    def test_non_objects_are_errors(self):
        for value, expected in [
            (b"[1,2]", "record value is not a JSON object: found an array"),
            (b'"x"', "record value is not a JSON object: found a string"),
            (b"null", "record value is not a JSON object: found null"),
            (b"true", "record value is not a JSON object: found a boolean"),
            (b"1.5", "record value is not a JSON object: found a number"),
            # Parse errors: the same prefix, Python's wording after it.
            (b"", "record value is not a JSON object: "),
            (b"{", "record value is not a JSON object: "),
            (b'{"a":NaN}', "record value is not a JSON object: "),
            (b"\xff", "record value is not a JSON object: "),
            (b'{"a":1e400}', "record value is not a JSON object: number out of range"),
        ]:
            with self.subTest(value=value):
                message = mapped(CONFIG, value)
                self.assertIsInstance(message, str)
                self.assertTrue(message.startswith(expected), message)

    def test_nesting_is_limited_as_in_serde_json(self):
        deepest = b'{"a":' + b"[" * 126 + b"]" * 126 + b"}"
        self.assertEqual(mapped("", deepest), deepest)
        too_deep = b'{"a":' + b"[" * 127 + b"]" * 127 + b"}"
        self.assertEqual(mapped("", too_deep), "record value is not a JSON object: recursion limit exceeded")
        self.assertEqual(mapped("", b"[" * 100_000), "record value is not a JSON object: recursion limit exceeded")
        # Brackets inside strings don't nest.
        in_strings = json.dumps({"a": "[" * 200 + "\\", "b": '"' + "{" * 200}, separators=(",", ":")).encode()
        self.assertIsInstance(mapped("", in_strings), bytes)

    def test_empty_config_keeps_objects_sorted(self):
        self.assertEqual(mapped("", b'{"b":1,"a":2}'), b'{"a":2,"b":1}')
        self.assertEqual(mapped(" ", b'{"b":{"y":1,"x":[{"d":1,"c":2}]}}'), b'{"b":{"x":[{"c":2,"d":1}],"y":1}}')

    def test_output_is_serde_jsons_byte_for_byte(self):
        for value, expected in [
            # Non-ASCII stays UTF-8; control characters are escaped in lowercase hex.
            ('{"s":"é€😀","c":"\\u0001\\n\\t\\"\\\\/"}'.encode(), '{"c":"\\u0001\\n\\t\\"\\\\/","s":"é€😀"}'.encode()),
            (b'{"k":"\\u00e9"}', '{"k":"é"}'.encode()),
            # Names sort by code point (serde_json's BTreeMap: by UTF-8 bytes, the same order).
            ('{"é":1,"z":2,"A":3}'.encode(), '{"A":3,"z":2,"é":1}'.encode()),
            # Integers of i64 and u64 stay integers; beyond, floats.
            (b'{"a":-9223372036854775808,"b":18446744073709551615,"c":18446744073709551616}',
             b'{"a":-9223372036854775808,"b":18446744073709551615,"c":1.8446744073709552e19}'),
            # Floats in ryu's layout.
            (b'{"a":1.0,"b":1E2,"c":0.5,"d":1e16,"e":1e-5,"f":1.5e-7,"g":123456789012345680000,"h":-0.0}',
             b'{"a":1.0,"b":100.0,"c":0.5,"d":1e16,"e":0.00001,"f":1.5e-7,"g":1.2345678901234568e20,"h":-0.0}'),
            (b'{"a":1e15,"b":0.0001,"c":[2.5e-5]}', b'{"a":1000000000000000.0,"b":0.0001,"c":[0.000025]}'),
            # Duplicate names: the last one wins, as in serde_json.
            (b'{"a":1,"a":2}', b'{"a":2}'),
            (b' {"a" : [ 1 , 2 ] } ', b'{"a":[1,2]}'),
        ]:
            with self.subTest(value=value):
                self.assertEqual(mapped("{}", value), expected)

    def test_swap_is_allowed_collision_is_an_error(self):
        self.assertEqual(mapped('{"rename": {"a": "b", "b": "a"}}', b'{"a":1,"b":2}'), b'{"a":2,"b":1}')
        self.assertEqual(
            mapped('{"rename": {"station": "location"}}', b'{"location":1,"station":2}'),
            'field "location" would appear twice: the record has it and another field is renamed to it',
        )
        # Dropping the kept field makes room for the renamed one.
        self.assertEqual(
            mapped('{"rename": {"station": "location"}, "drop": ["location"]}', b'{"location":1,"station":2}'),
            b'{"location":2}',
        )

    def test_bad_configs_are_rejected(self):
        for config, expected in [
            ("{", "invalid configuration: "),
            ("[]", "invalid configuration: expected a JSON object, found an array"),
            ('{"renames": {}}', "invalid configuration: unknown field `renames`, expected one of"),
            ('{"rename": {"a": "x", "b": "x"}}', 'invalid configuration: fields "a" and "b" are both renamed to "x"'),
            ('{"rename": {"a": "x"}, "drop": ["a"]}', 'invalid configuration: field "a" is both renamed and dropped'),
            ('{"rename": {"a": 1}}', "invalid configuration: `rename` must be an object of strings"),
            ('{"drop": "a"}', "invalid configuration: `drop` must be an array of strings"),
            ('{"key_prefix": null}', "invalid configuration: `key_prefix` must be a string"),
        ]:
            with self.subTest(config=config):
                with self.assertRaises(ValueError) as caught:
                    FieldMapper(config)
                self.assertTrue(str(caught.exception).startswith(expected), str(caught.exception))

    def test_through_the_sdk(self):
        runner = Runner(FieldMapper)
        runner.init(CONFIG)
        records = [
            record(key=b"assignment/7", value=b'{"id":7,"station":"north"}', headers=[("h", b"1")]),
            record(key=b"assignment/8", value=None),
            record(key=None, value=b"[]"),
        ]
        self.assertEqual(
            decode_output(runner.translate(encode_input(records))),
            [
                ("ok", [(b"b/assignment/7", b'{"assignment_id":7,"location":"north"}', [("h", b"1")])]),
                ("ok", [(b"b/assignment/8", None, [])]),
                ("err", "record value is not a JSON object: found an array"),
            ],
        )


if __name__ == "__main__":
    unittest.main()
