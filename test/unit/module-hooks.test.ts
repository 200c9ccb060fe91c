import { execFile } from 'node:child_process'
import { test } from 'tap'
// @ts-expect-error plain JavaScript without types: the launchers load it before any TypeScript
import { resolveWithinEsmPackage } from '../../bin/module-hooks.js'
import { REPO_ROOT } from '../helpers/processes.ts'

const root = 'file:///app/node_modules/drizzle-orm/'

test('a relative .js import from one of the package\'s ES modules is answered without the lookup', async (t) => {
  t.same(resolveWithinEsmPackage('./sql/sql.js', `${root}index.js`, root),
    { url: `${root}sql/sql.js`, format: 'module', shortCircuit: true })
  t.same(resolveWithinEsmPackage('../column.js', `${root}pg-core/columns/common.js`, root),
    { url: `${root}pg-core/column.js`, format: 'module', shortCircuit: true })
})

test('everything else is left to Node', async (t) => {
  const cases: Array<[string, string | undefined, string]> = [
    ['./sql/sql.js', undefined, 'no parent (an entry point)'],
    ['drizzle-orm/pg-core', `${root}index.js`, 'a bare specifier (the exports map decides)'],
    ['postgres', `${root}postgres-js/driver.js`, 'another package'],
    ['./index.js', 'file:///app/src/db/client.ts', 'a parent outside the package'],
    ['./index.js', 'file:///app/node_modules/drizzle-orm-extra/index.js', 'a package whose name only starts the same'],
    ['./sql/sql.cjs', `${root}index.cjs`, 'a CommonJS parent'],
    ['./sql/sql.js', `${root}index.cjs`, 'a .js require from a CommonJS parent'],
    ['./data.json', `${root}index.js`, 'not a .js file'],
    ['./sql', `${root}index.js`, 'no extension'],
    ['../../other/index.js', `${root}pg-core/index.js`, 'a path that leaves the package'],
    ['/abs/index.js', `${root}index.js`, 'an absolute path'],
    ['file:///app/node_modules/drizzle-orm/x.js', `${root}index.js`, 'a URL']
  ]
  for (const [specifier, parent, why] of cases) t.equal(resolveWithinEsmPackage(specifier, parent, root), undefined, why)
})

/**
 * Imports drizzle-orm's entry points the server uses in a fresh Node, with or without the hooks,
 * and lists every module of the package it resolved with the format it was given (a recording
 * hook registered last, so it sees what the others answer).
 */
async function drizzleModules (withHooks: boolean): Promise<string[]> {
  const script = `
    import { registerHooks } from 'node:module'
    const seen = []
    registerHooks({ resolve (specifier, context, next) {
      const result = next(specifier, context)
      if (result.url.includes('/node_modules/drizzle-orm/')) seen.push(result.url + ' ' + result.format)
      return result
    } })
    for (const entry of ['drizzle-orm', 'drizzle-orm/pg-core', 'drizzle-orm/postgres-js', 'drizzle-orm/pglite', 'drizzle-orm/pglite/migrator', 'drizzle-orm/postgres-js/migrator']) await import(entry)
    process.stdout.write(JSON.stringify([...new Set(seen)].sort()))`
  const args = [...(withHooks ? ['--import', './bin/module-hooks.js'] : []), '--input-type=module', '-e', script]
  return await new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: REPO_ROOT, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`${error.message}\n${stderr}`))
      else resolve(JSON.parse(stdout) as string[])
    })
  })
}

test('with the hooks, drizzle-orm loads exactly the modules, in the formats, Node alone gives', async (t) => {
  const [hooked, plain] = await Promise.all([drizzleModules(true), drizzleModules(false)])
  t.ok(plain.length > 50, `Node alone resolved ${plain.length} modules of drizzle-orm`)
  t.ok(plain.every((line) => line.endsWith(' module')), 'every one of them an ES module')
  t.same(hooked, plain)
})
