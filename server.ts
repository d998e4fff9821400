/**
 * mcrelay server: `deno task server [flags]` (see `--help`).
 *
 * @module
 */
import { serverMain } from "./lib/cli/server_main.ts";
import { runMain } from "./lib/cli/output.ts";

if (import.meta.main) {
  Deno.exit(await runMain(() => serverMain(Deno.args)));
}
