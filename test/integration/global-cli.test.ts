import { execFile } from 'node:child_process'
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

/**
 * Decision 0026: the admin CLI outside the checkout is `npm link` (a symlink to the checkout, so
 * Node strips the types of files whose real path is outside node_modules), never a copy (which
 * Node refuses to run). Runs npm (the one on PATH, as a user would) against a scratch global
 * prefix and cache, offline: anything that tried the registry would fail.
 */

const ROOT = realpathSync(fileURLToPath(new URL('../..', import.meta.url)))
const { name, version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string, version: string }

interface Run { code: number | null, stdout: string, stderr: string }

async function run (file: string, args: string[], cwd: string, env: Record<string, string>): Promise<Run> {
  return await new Promise((resolve) => {
    execFile(file, args, { cwd, env: { ...process.env, ...env }, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, stdout, stderr })
    })
  })
}

t.test('the package is named after its command', async (t) => {
  t.equal(name, 'bus-mcp')
  const { bin } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }
  t.same(Object.keys(bin), ['bus-mcp'])
})

t.test('npm link: bus-mcp works from any folder, and npx finds it without the registry', async (t) => {
  const scratch = t.testdir({ elsewhere: {} })
  const prefix = join(scratch, 'prefix')
  const env = {
    npm_config_prefix: prefix,
    npm_config_cache: join(scratch, 'cache'),
    npm_config_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false'
  }
  const npmRun = async (args: string[], cwd: string): Promise<Run> => await run('npm', args, cwd, env)

  const linked = await npmRun(['link', '--ignore-scripts'], ROOT)
  t.equal(linked.code, 0, `npm link: ${linked.stderr}`)
  const installed = join(prefix, 'lib', 'node_modules', 'bus-mcp')
  t.ok(lstatSync(installed).isSymbolicLink(), 'the global package is a symlink …')
  t.equal(realpathSync(installed), ROOT, '… to the checkout')

  const elsewhere = join(scratch, 'elsewhere')
  const direct = await run(join(prefix, 'bin', 'bus-mcp'), ['--version'], elsewhere, env)
  t.same(direct, { code: 0, stdout: `${version}\n`, stderr: '' }, 'bus-mcp --version outside the checkout')
  const npx = await npmRun(['exec', '--', 'bus-mcp', '--version'], elsewhere)
  t.equal(npx.code, 0, `npx bus-mcp outside the checkout, offline: ${npx.stderr}`)
  t.equal(npx.stdout, `${version}\n`)

  const removed = await npmRun(['rm', '-g', 'bus-mcp'], elsewhere)
  t.equal(removed.code, 0, removed.stderr)
  t.notOk(existsSync(join(prefix, 'bin', 'bus-mcp')), 'npm rm -g bus-mcp removes the command')
  t.ok(existsSync(join(ROOT, 'bin', 'bus-mcp.js')), 'and not the checkout')
})

t.test('inside the checkout, npx bus-mcp runs the checkout\'s own CLI from any folder of it', async (t) => {
  const scratch = t.testdir()
  const npx = await run('npm', ['exec', '--', 'bus-mcp', '--version'], join(ROOT, 'docs'), {
    npm_config_cache: join(scratch, 'cache'), npm_config_offline: 'true', npm_config_update_notifier: 'false'
  })
  t.equal(npx.code, 0, npx.stderr)
  t.equal(npx.stdout, `${version}\n`)
})

t.test('a copy under node_modules (npm pack, a git URL, --install-links) is refused in one line', async (t) => {
  const copy = join(t.testdir(), 'node_modules', 'bus-mcp')
  mkdirSync(copy, { recursive: true })
  for (const part of ['package.json', 'bin', 'src']) cpSync(join(ROOT, part), join(copy, part), { recursive: true })
  const launcher = await run(process.execPath, [join(copy, 'bin', 'bus-mcp.js'), '--version'], copy, {})
  t.equal(launcher.code, 1)
  t.match(launcher.stderr, /^bus-mcp: installed as a copy under node_modules, where Node does not run TypeScript; .*npm link.*\n$/)
  // If Node ever strips types under node_modules, copying installs become possible: revisit 0026.
  const direct = await run(process.execPath, [join(copy, 'src', 'cli.ts'), '--version'], copy, {})
  t.not(direct.code, 0)
  t.match(direct.stderr, /ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING/)
})
