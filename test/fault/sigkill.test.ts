import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createEmbeddedDataDir, createPostgresDatabase } from '../helpers/database.ts'
import { admin, startServerProcess, type ServerProcess } from '../helpers/processes.ts'
import { postgres, testNeeding } from '../helpers/requirements.ts'

/**
 * SIGKILL during sends (issue 5, item 3). Clients loop bus_send (to a channel and to an inbox)
 * against a server process; it is killed with SIGKILL mid-way and a new process is started on
 * the same embedded DATA_DIR (whose pid lock the dead process left behind) or PostgreSQL
 * database. Every acknowledged send is readable afterwards; each client saw its ids strictly
 * increase; the stored ids have no gap (ids come from one counter row in the same statement, so
 * a send that did not commit took no id), and what was stored but never acknowledged is no more
 * than the sends in flight when the process died.
 */

const WORKERS = 4
const KILL_AFTER = 60

interface Sent { id: number, worker: number, body: string }

async function call (server: ServerProcess, token: string, name: string, args: Record<string, unknown>): Promise<{ status: number, data: any }> {
  const response = await fetch(`${server.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } }),
    signal: AbortSignal.timeout(15_000)
  })
  const body = await response.json() as { result?: { isError?: boolean, structuredContent?: unknown } }
  return { status: response.status, data: body.result?.isError === true ? undefined : body.result?.structuredContent }
}

/** Every message of a stream, paging with `after`. */
async function readAll (server: ServerProcess, token: string, channel: string | undefined): Promise<Array<{ id: number, body: string }>> {
  const out: Array<{ id: number, body: string }> = []
  for (let after = 0; ;) {
    const { status, data } = await call(server, token, 'bus_read', { ...(channel === undefined ? {} : { channel }), after, limit: 500 })
    if (status !== 200 || data === undefined) throw new Error(`bus_read: ${status}`)
    const messages = data.messages as Array<{ id: number, body: string }>
    if (messages.length === 0) return out
    out.push(...messages)
    after = data.next_after as number
  }
}

async function killMidSends (t: Test, env: Record<string, string>, dataDir?: string): Promise<void> {
  const booting = Date.now()
  const first = await startServerProcess(t, { RATE_LIMIT_MULTIPLIER: '0', ...env })
  t.comment(`first process up in ${Date.now() - booting} ms`)
  await admin(first, 'principals', { name: 'writer' })
  const { token } = await admin<{ token: string }>(first, 'tokens', { principal: 'writer' })

  const acknowledged: Sent[] = []
  let attempts = 0
  let dead = false
  const worker = async (worker: number): Promise<void> => {
    for (let n = 0; !dead; n++) {
      const body = `w${worker}-${n}`
      attempts++
      try {
        // Three workers post to a channel, one to the writer's own inbox (the other statement).
        const { status, data } = await call(first, token, 'bus_send', worker === 0 ? { to: 'writer', body } : { channel: 'crash', body })
        if (status === 200 && typeof data?.id === 'number') acknowledged.push({ id: data.id, worker, body })
      } catch {
        // The process is gone (connection refused or reset): stop.
        dead = true
      }
    }
  }
  const workers = Array.from({ length: WORKERS }, async (_, i) => { await worker(i) })
  while (acknowledged.length < KILL_AFTER) await new Promise((resolve) => setTimeout(resolve, 2))
  first.kill('SIGKILL')
  await first.exited
  dead = true
  await Promise.all(workers)
  t.equal(first.child.signalCode, 'SIGKILL', `killed with SIGKILL after ${acknowledged.length} acknowledged sends (${attempts} attempted)`)

  if (dataDir !== undefined) {
    const lock = join(dataDir, 'bus-mcp.pid')
    t.ok(existsSync(lock), 'the dead process left its pid lock behind')
    t.equal(Number(readFileSync(lock, 'utf8')), first.child.pid, 'naming the dead process')
  }

  const started = Date.now()
  const second = await startServerProcess(t, { RATE_LIMIT_MULTIPLIER: '0', ...env })
  t.pass(`a new process started on the same database in ${Date.now() - started} ms`)
  if (dataDir !== undefined) t.equal(Number(readFileSync(join(dataDir, 'bus-mcp.pid'), 'utf8')), second.child.pid, 'and took the stale lock over')

  const reading = Date.now()
  const stored = [...await readAll(second, token, 'crash'), ...await readAll(second, token, undefined)]
  t.comment(`read back in ${Date.now() - reading} ms`)
  const storedIds = new Map(stored.map((m) => [m.id, m.body]))
  const lost = acknowledged.filter((sent) => storedIds.get(sent.id) !== sent.body)
  t.same(lost, [], `every one of ${acknowledged.length} acknowledged sends is readable after the restart`)

  for (let w = 0; w < WORKERS; w++) {
    const ids = acknowledged.filter((sent) => sent.worker === w).map((sent) => sent.id)
    t.ok(ids.every((id, i) => i === 0 || id > (ids[i - 1] as number)), `worker ${w}: ids strictly increasing (${ids.length} sends)`)
  }
  const sorted = [...storedIds.keys()].sort((a, b) => a - b)
  const gaps = sorted.filter((id, i) => id !== i + 1)
  t.same(gaps.slice(0, 5), [], `stored ids are 1..${sorted.length} without a gap`)
  const unacknowledged = sorted.length - acknowledged.length
  t.ok(unacknowledged >= 0 && unacknowledged <= WORKERS, `${unacknowledged} stored but unacknowledged (at most the ${WORKERS} sends in flight)`)

  const after = await call(second, token, 'bus_send', { channel: 'crash', body: 'after the restart' })
  t.equal(after.status, 200)
  t.equal(after.data?.id, (sorted.at(-1) ?? 0) + 1, 'the next id follows the last stored one')
}

// The two cases are independent processes, mostly waiting for each other's start: run them together.
t.jobs = 2

t.test('embedded database: SIGKILL during sends, restart on the same DATA_DIR', async (t) => {
  const dataDir = t.testdir()
  // A migrated database already in place (as after a first run): the test is about the restart.
  const preparing = Date.now()
  await createEmbeddedDataDir(dataDir)
  t.comment(`DATA_DIR prepared in ${Date.now() - preparing} ms`)
  await killMidSends(t, { DATA_DIR: dataDir }, dataDir)
})

testNeeding(t, 'PostgreSQL: SIGKILL during sends, restart on the same database', [postgres()], async (t) => {
  await killMidSends(t, { DATABASE_URL: await createPostgresDatabase(t) })
})
