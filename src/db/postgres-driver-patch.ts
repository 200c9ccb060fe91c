import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

/**
 * The fix `postgres-driver.ts` applies to postgres.js's connection.js (docs/decisions/0020), and
 * the checks that it applies: the server refuses to start on PostgreSQL without it, `bus-mcp
 * doctor` reports it, and test/unit/postgres-driver.test.ts fails. This module only reads text:
 * it never loads the driver, so `doctor` can check an installation without paying for that.
 */

const require = createRequire(import.meta.url)

const NEXT_WRITE = '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)\n'
const GUARDED_NEXT_WRITE = `  function writeAfterClose() {
    nextWriteTimer !== null && clearImmediate(nextWriteTimer)
    chunk = nextWriteTimer = null
    const err = Errors.connection('CONNECTION_CLOSED', options)
    query && queryError(query, err)
    while (sent.length)
      queryError(sent.shift(), err)
    return false
  }

  function nextWrite(fn) {
    if (socket === null)
      return writeAfterClose()
    const x = socket.write(chunk, fn)
`
const CANCEL_WRITE = '    clearImmediate(nextWriteTimer)\n'
const FORGET_WRITE = '    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n'

/** The patched source, or the original when it is not the code this fixes. */
export function patchConnectionSource (source: string): { source: string, patched: boolean } {
  if (!source.includes(NEXT_WRITE) || source.split(CANCEL_WRITE).length !== 3) return { source, patched: false }
  return { source: source.replace(NEXT_WRITE, GUARDED_NEXT_WRITE).replaceAll(CANCEL_WRITE, FORGET_WRITE), patched: true }
}

/** Where the installed postgres.js is: its version and the CommonJS connection.js the fix rewrites. */
export interface PostgresDriverFiles { version: string, connectionFile: string }

export function locatePostgresDriver (): PostgresDriverFiles {
  const cjsSource = dirname(require.resolve('postgres')) // …/postgres/cjs/src
  const packageJson = JSON.parse(readFileSync(join(cjsSource, '..', '..', 'package.json'), 'utf8')) as { version?: unknown }
  return { version: typeof packageJson.version === 'string' ? packageJson.version : 'unknown', connectionFile: join(cjsSource, 'connection.js') }
}

/** Whether the fix applies to a postgres.js (the one loaded, or the one installed). */
export interface PostgresDriverState { version: string, patched: boolean }

/**
 * The installed postgres.js, judged by its source text (not loaded). `source` replaces the file's
 * text, for tests.
 */
export function inspectPostgresDriver (source?: string): PostgresDriverState {
  const { version, connectionFile } = locatePostgresDriver()
  return { version, patched: patchConnectionSource(source ?? readFileSync(connectionFile, 'utf8')).patched }
}

/** What is wrong and what to do, or undefined when the fix applied. */
export function postgresDriverIssue (state: PostgresDriverState): { problem: string, fix: string } | undefined {
  if (state.patched) return undefined
  return {
    problem: `postgres.js ${state.version} is not the code its connection fix was written for (docs/decisions/0020: without it a ` +
      'database restart can crash the server)',
    fix: 'install the pinned version with "npm ci", or, if this release fixes porsager/postgres#1208, remove src/db/postgres-driver.ts'
  }
}

/** The same as one line (how the server's start stops), or undefined when the fix applied. */
export function postgresDriverProblem (state: PostgresDriverState): string | undefined {
  const issue = postgresDriverIssue(state)
  return issue === undefined ? undefined : `${issue.problem}: ${issue.fix}`
}
