import { execFileSync, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

/**
 * No file of the repository names a package registry's host (issue 14, item 8): scripts read the
 * registry and the mirror from the machine (`npm config get registry`, apt's sources) and the
 * documentation says "the npm registry". The hosts are read from this machine too, so this file
 * names none either: npm's configured and built-in registries, and every repository apt uses.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

function hostOf (url: string): string | undefined {
  try { return new URL(url.trim()).hostname.toLowerCase() || undefined } catch { return undefined }
}

function npmRegistry (env: NodeJS.ProcessEnv, cwd: string, extra: string[] = []): string {
  return execFileSync('npm', ['config', 'get', 'registry', ...extra], { cwd, env, encoding: 'utf8' })
}

t.test('no file in the repository names the npm registry\'s or apt\'s hosts', async (t) => {
  const hosts = new Set<string>()
  const configured = hostOf(npmRegistry(process.env, ROOT))
  t.ok(configured, 'npm names a registry')
  if (configured !== undefined) hosts.add(configured)
  // npm's built-in default: no project, user or global configuration, no npm_config_* variables.
  const dir = t.testdir()
  for (const name of ['user', 'global']) writeFileSync(join(dir, name), '')
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k)))
  const builtIn = hostOf(npmRegistry(env, dir, ['--userconfig', join(dir, 'user'), '--globalconfig', join(dir, 'global')]))
  t.ok(builtIn, 'npm has a built-in registry')
  if (builtIn !== undefined) hosts.add(builtIn)
  // Every repository apt on this machine uses (none where there is no apt).
  const apt = spawnSync('apt-get', ['indextargets', '--format', '$(REPO_URI)'], { encoding: 'utf8' })
  if (apt.status === 0) for (const line of apt.stdout.split('\n')) { const host = hostOf(line); if (host !== undefined) hosts.add(host) }

  for (const host of hosts) {
    const found = spawnSync('git', ['grep', '-n', '-i', '-F', host], { cwd: ROOT, encoding: 'utf8' })
    t.equal(found.status, 1, `no tracked file names ${host}:\n${found.stdout}${found.stderr}`)
  }
})
