/**
 * Programs a test needs from the machine (compilers, build tools), asked for before the test runs
 * so that it can skip with a visible reason.
 *
 * @module
 */

/** The first of `cmds` that does not answer `--version`, as a skip reason ("g++ not found"), or
 * null when all of them do. */
export async function missingTool(...cmds: string[]): Promise<string | null> {
  for (const cmd of cmds) {
    const ok = await new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .output().then((o) => o.success, () => false);
    if (!ok) return `${cmd} not found`;
  }
  return null;
}
