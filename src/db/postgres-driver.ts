import Module, { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type postgresModule from 'postgres'

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
 * throwing, and closing a connection drops its unsent buffer. A release that changes this code
 * (fixed upstream) is loaded as is.
 */

type Postgres = typeof postgresModule

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

interface CompilingModule { _compile: (content: string, filename: string) => unknown }

function loadPostgres (): { postgres: Postgres, patched: boolean } {
  const connectionFile = join(dirname(require.resolve('postgres')), 'connection.js')
  const prototype = Module.prototype as unknown as CompilingModule
  const compile = prototype._compile
  let patched = false
  prototype._compile = function (this: CompilingModule, content: string, filename: string) {
    if (filename === connectionFile) ({ source: content, patched } = patchConnectionSource(content))
    return compile.call(this, content, filename)
  }
  try {
    return { postgres: require('postgres') as Postgres, patched }
  } finally {
    prototype._compile = compile
  }
}

const loaded = loadPostgres()

/** The postgres.js factory (same API as `import postgres from 'postgres'`). */
export const postgres: Postgres = loaded.postgres
/** Whether the fix was applied (false once a postgres.js release has changed that code). */
export const postgresDriverPatched: boolean = loaded.patched
