import Module, { createRequire } from 'node:module'
import type postgresModule from 'postgres'
import { locatePostgresDriver, patchConnectionSource, postgresDriverProblem as describeProblem, type PostgresDriverState } from './postgres-driver-patch.ts'

/**
 * postgres.js, with its write scheduler fixed for connections that die.
 *
 * In postgres.js 3.4.9 (the newest release) a connection lost inside a transaction crashes the
 * process: `begin` sends ROLLBACK on the dead connection, the write is deferred to a
 * `setImmediate`, and by then `closed()` has set the socket to null, so `socket.write` throws
 * from the immediate, where no caller can catch it (porsager/postgres#1066, #1154, #1208; the
 * fixes in #1168, #1176, #1209 are unreleased). `closed()` also cancels a pending write without
 * forgetting it, so the connection, once reconnected, never flushes again: every query on it
 * waits for connect_timeout and fails. Both happen whenever PostgreSQL restarts under load (see
 * test/fault/database-outage.test.ts and docs/decisions/0020-postgres-driver-patch.md).
 *
 * This loads the package's CommonJS build with two small changes applied to connection.js in
 * memory (node_modules is not touched, so it holds however the package was installed):
 * a write on a closed connection fails the queries sent on it with CONNECTION_CLOSED instead of
 * throwing, and closing a connection drops its unsent buffer. package.json pins the exact
 * version the change is written for. A release that changes this code is loaded as is, and then
 * `postgresDriverProblem()` says so: the server refuses to start on PostgreSQL, `bus-mcp doctor`
 * fails its postgres-driver check, and test/unit/postgres-driver.test.ts fails.
 */

export { patchConnectionSource } from './postgres-driver-patch.ts'

type Postgres = typeof postgresModule

const require = createRequire(import.meta.url)

interface CompilingModule { _compile: (content: string, filename: string) => unknown }

function loadPostgres (): { postgres: Postgres, state: PostgresDriverState } {
  const { version, connectionFile } = locatePostgresDriver()
  const prototype = Module.prototype as unknown as CompilingModule
  const compile = prototype._compile
  let patched = false
  prototype._compile = function (this: CompilingModule, content: string, filename: string) {
    if (filename === connectionFile) ({ source: content, patched } = patchConnectionSource(content))
    return compile.call(this, content, filename)
  }
  try {
    return { postgres: require('postgres') as Postgres, state: { version, patched } }
  } finally {
    prototype._compile = compile
  }
}

const loaded = loadPostgres()

/** The postgres.js factory (same API as `import postgres from 'postgres'`). */
export const postgres: Postgres = loaded.postgres
/** Whether the fix was applied (false once a postgres.js release has changed that code). */
export const postgresDriverPatched: boolean = loaded.state.patched
/** The loaded postgres.js: its version and whether the fix was applied to it. */
export const postgresDriver: Readonly<PostgresDriverState> = Object.freeze({ ...loaded.state })

/** One line for the start to stop with when the fix did not apply to the loaded driver; else undefined. */
export function postgresDriverProblem (): string | undefined {
  return describeProblem(loaded.state)
}
