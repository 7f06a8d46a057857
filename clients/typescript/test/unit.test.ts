// Position, the stores and error decoding, without a gateway.
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { Code, FileStore, MemoryStore, OffsetsDetail_Kind, OffsetsDetailSchema, Position, toTributaryError } from "../src/index.js";

test("Position: merge lets the newer offsets win, toOffsets is sorted, JSON round-trips", () => {
  const a = Position.fromOffsets([{ topic: "t", partition: 1, offset: 5n }, { topic: "t", partition: 0, offset: 7n }]);
  const b = a.merge([{ topic: "t", partition: 1, offset: 9n }, { topic: "u", partition: 0, offset: 1n }]);
  assert.deepEqual(b.toOffsets(), [
    { topic: "t", partition: 0, offset: 7n },
    { topic: "t", partition: 1, offset: 9n },
    { topic: "u", partition: 0, offset: 1n },
  ]);
  assert.equal(a.get("t", 1), 5n, "merge does not change the original");
  assert.ok(Position.fromJSON(JSON.parse(JSON.stringify(b))).equals(b));
  assert.ok(!b.equals(a));
  assert.equal(b.with("t", 0, 8n).get("t", 0), 8n);
  assert.equal(String(a), "t/0@7,t/1@5");
});

test("FileStore: save, load, clear; nothing left beside the file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tributary-ts-unit-"));
  try {
    const store = new FileStore(join(dir, "pos.json"));
    assert.equal(await store.load(), undefined);
    const p = Position.fromOffsets([{ topic: "t", partition: 0, offset: 12345678901234n }]);
    await store.save(p);
    assert.ok((await store.load())!.equals(p));
    assert.deepEqual(JSON.parse(await readFile(join(dir, "pos.json"), "utf8")), [{ topic: "t", partition: 0, offset: "12345678901234" }]);
    assert.deepEqual(await readdir(dir), ["pos.json"]);
    await store.clear();
    assert.equal(await store.load(), undefined);
    const memory = new MemoryStore();
    memory.save(p);
    assert.equal(memory.load(), p);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("toTributaryError decodes ErrorInfo, BadRequest and OffsetsDetail, ignoring unknown details", () => {
  const err = new ConnectError("offset 3 is no longer retained", Code.OutOfRange, undefined, [
    { desc: ErrorInfoSchema, value: create(ErrorInfoSchema, { reason: "OFFSET_TOO_OLD", domain: "tributary", metadata: { topic: "t" } }) },
    { desc: BadRequestSchema, value: { fieldViolations: [{ field: "from_offsets[0].offset", description: "too old" }] } },
    { desc: OffsetsDetailSchema, value: { kind: OffsetsDetail_Kind.EARLIEST, offsets: [{ topic: "t", partition: 0, offset: 40n }] } },
  ]);
  const e = toTributaryError(err);
  assert.equal(e.code, Code.OutOfRange);
  assert.equal(e.codeName, "OUT_OF_RANGE");
  assert.equal(e.rawMessage, "offset 3 is no longer retained");
  assert.equal(e.reason, "OFFSET_TOO_OLD");
  assert.equal(e.domain, "tributary");
  assert.deepEqual(e.metadata, { topic: "t" });
  assert.deepEqual(e.fieldViolations, [{ field: "from_offsets[0].offset", description: "too old" }]);
  assert.equal(e.offsetsKind, "EARLIEST");
  assert.equal(e.offsets?.get("t", 0), 40n);
  assert.equal(toTributaryError(e), e);
  const plain = toTributaryError(new Error("boom"));
  assert.equal(plain.reason, "");
  assert.equal(plain.offsets, undefined);
});
