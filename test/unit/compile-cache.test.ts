import { execFile } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'tap'
import { REPO_ROOT } from '../helpers/processes.ts'

/** Files the compile cache holds under `tmp` (the default folder is `<tmpdir>/node-compile-cache`). */
function cachedFiles (tmp: string): string[] {
  const folder = join(tmp, 'node-compile-cache')
  if (!existsSync(folder)) return []
  return readdirSync(folder, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile()).map((entry) => entry.name)
}

/** Runs a launcher with only PATH, TMPDIR (where the cache goes by default) and `env`. */
async function launch (args: string[], tmp: string, env: Record<string, string> = {}): Promise<number | null> {
  return await new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '', TMPDIR: tmp, ...env }, timeout: 60_000 }, (error) => {
      resolve(error === null ? 0 : typeof error.code === 'number' ? error.code : null)
    })
  })
}

test('the CLI launcher keeps the compiled modules in <tmpdir>/node-compile-cache', async (t) => {
  const tmp = t.testdir()
  t.equal(await launch(['bin/bus-mcp.js', '--help'], tmp), 0)
  t.ok(cachedFiles(tmp).length > 20, `${cachedFiles(tmp).length} modules cached`)
})

test('so does the server launcher, even for a start that stops at a configuration error', async (t) => {
  const tmp = t.testdir()
  t.equal(await launch(['bin/server.js'], tmp, { PORT: 'abc' }), 1)
  t.ok(cachedFiles(tmp).length > 100, `${cachedFiles(tmp).length} modules cached (the server's module graph)`)
})

test('a folder that cannot be written does not stop the launcher', async (t) => {
  const tmp = t.testdir({ 'node-compile-cache': 'a file where the folder would be' })
  t.equal(await launch(['bin/bus-mcp.js', '--help'], tmp), 0)
})
