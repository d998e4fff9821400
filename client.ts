/**
 * mcrelay client: `deno task client --tcp-port 9000 [flags]` (see `--help`).
 *
 * @module
 */
import { clientMain } from "./lib/cli/client_main.ts";
import { runMain } from "./lib/cli/output.ts";

if (import.meta.main) {
  Deno.exit(await runMain(() => clientMain(Deno.args)));
}
