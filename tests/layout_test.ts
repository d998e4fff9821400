/**
 * The architecture, checked: the folders of lib/ keep their promises (pure
 * layers import no I/O and touch no `Deno` API, the client does not import
 * the server), every lib/ file says what it holds in an opening comment and
 * stays small enough to read (issue 12: about 450 lines at most).
 *
 * @module
 */
import assert from "node:assert/strict";

const LIB = new URL("../lib/", import.meta.url);
const MAX_LINES = 460;
/** Layers with no I/O of their own: they may import only each other. */
const PURE_LAYERS = ["wire", "crypto", "core"];

interface SourceFile {
  /** Path under lib/, e.g. `wire/tlv.ts`. */
  readonly path: string;
  readonly text: string;
}

async function libFiles(dir = LIB, prefix = ""): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = prefix + entry.name;
    if (entry.isDirectory) {
      files.push(...await libFiles(new URL(`${entry.name}/`, dir), `${path}/`));
    } else if (entry.name.endsWith(".ts")) {
      files.push({
        path,
        text: await Deno.readTextFile(new URL(entry.name, dir)),
      });
    }
  }
  return files.sort((a, b) => a.path.localeCompare(b.path));
}

/** The lib/-relative paths a file imports (static and dynamic, relative specifiers). */
function importsOf(file: SourceFile): string[] {
  const dir = file.path.split("/").slice(0, -1);
  const found: string[] = [];
  for (
    const match of file.text.matchAll(/(?:from|import\()\s*"(\.{1,2}\/[^"]+)"/g)
  ) {
    const parts = [...dir];
    for (const part of match[1].split("/")) {
      if (part === "..") parts.pop();
      else if (part !== ".") parts.push(part);
    }
    found.push(parts.join("/"));
  }
  return found;
}

Deno.test("layout: every lib/ file opens with a comment saying what it holds and stays under the size limit", async () => {
  const files = await libFiles();
  assert.ok(files.length > 50, `only ${files.length} files found under lib/`);
  const tooLong = files
    .map((f) => ({ path: f.path, lines: f.text.split("\n").length }))
    .filter((f) => f.lines > MAX_LINES);
  assert.deepEqual(tooLong, [], `lib/ files over ${MAX_LINES} lines`);
  const uncommented = files.filter((f) => !f.text.startsWith("/**"));
  assert.deepEqual(uncommented.map((f) => f.path), []);
});

Deno.test("layout: lib/wire, lib/crypto and lib/core import only each other and touch no Deno API or timer", async () => {
  const files = await libFiles();
  const pure = files.filter((f) => PURE_LAYERS.includes(f.path.split("/")[0]));
  assert.ok(pure.length > 20);
  const outside = pure.flatMap((f) =>
    importsOf(f)
      .filter((target) => !PURE_LAYERS.includes(target.split("/")[0]))
      .filter((target) => target !== "errors.ts" && target !== "log.ts")
      .map((target) => `${f.path} -> ${target}`)
  );
  assert.deepEqual(outside, []);
  const io = pure
    .filter((f) => /\bDeno\.|\bset(Timeout|Interval)\(/.test(f.text))
    .map((f) => f.path);
  assert.deepEqual(io, []);
});

Deno.test("layout: the client does not import the server, nor the server the client", async () => {
  const files = await libFiles();
  const crossing = files.flatMap((f) => {
    const [, side] = f.path.split("/");
    if (!f.path.startsWith("relay/") || !["client", "server"].includes(side)) {
      return [];
    }
    const other = side === "client" ? "relay/server/" : "relay/client/";
    return importsOf(f).filter((t) => t.startsWith(other)).map((t) =>
      `${f.path} -> ${t}`
    );
  });
  assert.deepEqual(crossing, []);
  // The check itself sees imports: the server imports its own modules.
  const server = files.find((f) => f.path === "relay/server/server.ts");
  assert.ok(
    server && importsOf(server).some((t) => t.startsWith("relay/server/")),
  );
});
