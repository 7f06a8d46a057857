"""Usage: strip-exports.py WASM_TOOLS IN OUT

Writes to OUT a component that instantiates the component IN and exports all IN's top-level
exports but ``exports``, componentize-py's pre-initialization hook (``init(app-name, symbols,
stub-wasi)``), which it leaves in every component it writes. The gateway must see the world's
exports only: ``init``/``translate`` (contract v1) or ``tributary:translator/batch@0.2.0`` (v2).

The wrapper is a few binary sections around IN, unchanged:

- IN's leading type definitions and type imports, copied: ``(import "header" (type (eq N)))``
  is how a component names the records of its own world (v1 has four), not something a host
  provides;
- IN nested as a component, and one instance of it, given those types for its type imports;
- an alias of each kept export of the instance, and its export under the same name.

IN's exports are read from ``wasm-tools print --skeleton``; its other imports must be none.
"""

import re
import subprocess
import sys

DROPPED = "exports"

# Component-level sorts (the binary format's `sort`) by their name in the text format.
SORTS = {"func": 0x01, "value": 0x02, "type": 0x03, "component": 0x04, "instance": 0x05}
PREAMBLE = b"\x00asm\x0d\x00\x01\x00"


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string(s: str) -> bytes:
    data = s.encode()
    return leb(len(data)) + data


def section(id: int, items: list[bytes]) -> bytes:
    body = leb(len(items)) + b"".join(items)
    return bytes([id]) + leb(len(body)) + body


def read_leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def read_string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos = read_leb(data, pos)
    return data[pos : pos + length].decode(), pos + length


def world_types(inner: bytes) -> tuple[list[bytes], list[tuple[str, int]], int]:
    """IN's leading type and import sections, checked to import type names only: the
    sections, the imported types (name, index) and the number of type indices they define."""
    sections, named, types = [], [], 0
    pos = len(PREAMBLE)
    while pos < len(inner):
        id = inner[pos]
        size, body = read_leb(inner, pos + 1)
        end = body + size
        if id == 7:  # type section: each entry defines one type index
            count, _ = read_leb(inner, body)
            types += count
            sections.append(inner[pos:end])
        elif id == 10:  # import section
            count, at = read_leb(inner, body)
            for _ in range(count):
                if inner[at] not in (0x00, 0x01):
                    sys.exit(f"strip-exports: unknown import name encoding {inner[at]:#x}")
                name, at = read_string(inner, at + 1)
                # externdesc `type (eq N)`: 0x03 0x00 N; anything else is a real import.
                if inner[at : at + 2] != b"\x03\x00":
                    sys.exit(f"strip-exports: the component imports {name!r}, which is not a type name")
                _, at = read_leb(inner, at + 2)
                named.append((name, types))
                types += 1
            sections.append(inner[pos:end])
        else:
            return sections, named, types
        pos = end
    sys.exit("strip-exports: the component has nothing but types")


def main() -> None:
    wasm_tools, source, target = sys.argv[1:]
    skeleton = subprocess.run(
        [wasm_tools, "print", "--skeleton", source], check=True, capture_output=True, text=True
    ).stdout
    # `(export $id (@name "init") (;2;) "init" (func ...))`, the $id maybe quoted.
    exports = re.findall(
        r'^  \(export (?:\$(?:"[^"]*"|\S+) )?(?:\(@name "[^"]*"\) )?\(;\d+;\) "([^"]+)" \((\w+) ',
        skeleton,
        re.M,
    )
    kept = [(name, sort) for name, sort in exports if name != DROPPED]
    if not kept or len(kept) == len(exports):
        sys.exit(f"strip-exports: expected {DROPPED!r} and the world among the exports of {source}, found {exports}")
    with open(source, "rb") as f:
        inner = f.read()
    if not inner.startswith(PREAMBLE):
        sys.exit(f"strip-exports: {source} is not a component")

    prefix, named, types = world_types(inner)
    # Where each sort's aliases start: after the copied types; instance 0 is IN's instance.
    counts = dict.fromkeys(SORTS.values(), 0)
    counts[SORTS["type"]] = types
    counts[SORTS["instance"]] = 1
    aliases, reexports = [], []
    for name, sort in kept:
        code = SORTS[sort]
        # Alias the export of instance 0 (indices in alias order: the exports come after all
        # aliases), then export the alias under the same name, without a type ascription.
        aliases.append(bytes([code, 0x00]) + leb(0) + string(name))
        reexports.append(b"\x00" + string(name) + bytes([code]) + leb(counts[code]) + b"\x00")
        counts[code] += 1
    arguments = [string(name) + b"\x03" + leb(index) for name, index in named]
    wrapper = b"".join(
        [
            PREAMBLE,
            *prefix,
            bytes([4]) + leb(len(inner)) + inner,  # IN, component 0
            section(5, [b"\x00" + leb(0) + leb(len(arguments)) + b"".join(arguments)]),  # instantiate it
            section(6, aliases),
            section(11, reexports),
        ]
    )
    with open(target, "wb") as f:
        f.write(wrapper)


if __name__ == "__main__":
    main()
