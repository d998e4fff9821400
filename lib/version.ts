/**
 * The one version of mcrelay: the `version` field of deno.json, which the
 * CLIs print (`--version`, the control-port greeting) and mod.ts exports.
 *
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };

/** mcrelay's version (deno.json `version`). */
export const VERSION: string = denoJson.version;
