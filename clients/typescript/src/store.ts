import { open, readFile, rename, rm } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { Position } from "./position.js";

/**
 * Where a follow keeps its position. An application that keeps its position in the same
 * transaction as its rows implements this itself, writes the position inside `apply`'s
 * transaction, and lets `save` write the same position again (idempotent).
 */
export interface Store {
  load(): Promise<Position | undefined> | Position | undefined;
  save(position: Position): Promise<void> | void;
  clear(): Promise<void> | void;
}

/** Keeps the position in memory: a follow restarted in the same process resumes from it. */
export class MemoryStore implements Store {
  position: Position | undefined;

  constructor(position?: Position) {
    this.position = position;
  }

  load(): Position | undefined {
    return this.position;
  }

  save(position: Position): void {
    this.position = position;
  }

  clear(): void {
    this.position = undefined;
  }
}

/**
 * Keeps the position in a JSON file, replaced atomically: written to a temporary file beside it,
 * fsynced, renamed over it, and the directory fsynced.
 */
export class FileStore implements Store {
  constructor(readonly path: string) {}

  async load(): Promise<Position | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return Position.fromJSON(JSON.parse(text));
  }

  async save(position: Position): Promise<void> {
    const tmp = join(dirname(this.path), `.${basename(this.path)}.${process.pid}.tmp`);
    const file = await open(tmp, "w");
    try {
      await file.writeFile(JSON.stringify(position) + "\n");
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, this.path);
    await syncDir(dirname(this.path));
  }

  async clear(): Promise<void> {
    await rm(this.path, { force: true });
    await syncDir(dirname(this.path));
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } catch {
    // Some file systems refuse to fsync a directory; the rename is still atomic.
  } finally {
    await handle.close();
  }
}
