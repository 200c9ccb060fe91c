import { createBenchDatabase, insertBulkRows } from './lib/database.ts'
import { httpMeasure, type Measure } from './lib/load.ts'
import { apiTokenFor, seedChannel, startOurServer, type OurServer } from './lib/ours.ts'
import { renderTable } from './lib/report.ts'
import { runRounds, type RoundOptions } from './lib/rounds.ts'
import { callTool, rpcHeaders, toolCallBody } from './lib/rpc.ts'
import type { Target } from './targets.ts'

interface LargeRig {
  connections: number
  empty: { server: OurServer, token: string, after: number }
  large: { server: OurServer, token: string, after: number }
}

type Side = LargeRig['empty']

async function whoami (rig: LargeRig, side: Side): Promise<Measure> {
  const check = await callTool(side.server.mcpUrl, side.token, 'whoami')
  if (check.isError) throw new Error(`whoami failed: ${JSON.stringify(check.data)}`)
  return httpMeasure({ url: side.server.mcpUrl, servers: [side.server], connections: rig.connections, headers: rpcHeaders(side.token), body: toolCallBody('whoami') })
}

/** The newest ten messages of a channel (what a reader that keeps up asks for). */
async function read (rig: LargeRig, side: Side): Promise<Measure> {
  const body = toolCallBody('bus_read', { channel: 'bench-read', after: side.after, limit: 10 })
  const check = await callTool(side.server.mcpUrl, side.token, 'bus_read', { channel: 'bench-read', after: side.after, limit: 10 })
  if (check.isError || check.data.messages.length !== 10) throw new Error(`bus_read failed: ${JSON.stringify(check.data)}`)
  return httpMeasure({ url: side.server.mcpUrl, servers: [side.server], connections: rig.connections, headers: rpcHeaders(side.token), body })
}

const LARGE_TARGETS: Array<Target<LargeRig>> = [
  { key: 'whoami-empty', label: 'whoami, empty tables', checks: [], setup: async (rig) => await whoami(rig, rig.empty) },
  { key: 'whoami-large', label: 'whoami, large tables', checks: [{ kind: 'ratio', of: 'whoami-empty', min: 0.9 }], setup: async (rig) => await whoami(rig, rig.large) },
  { key: 'read-empty', label: 'bus_read newest 10, empty tables', checks: [], setup: async (rig) => await read(rig, rig.empty) },
  { key: 'read-large', label: 'bus_read newest 10, large tables', checks: [{ kind: 'ratio', of: 'read-empty', min: 0.9 }], setup: async (rig) => await read(rig, rig.large) }
]

/**
 * `--large`: two databases, one empty and one with a million rows in api_tokens and in
 * messages, each served by its own server process, measured in interleaved rounds so the
 * ratio large/empty comes from one run. Passes when both stay within 10 %.
 */
export async function runLarge (options: Omit<RoundOptions, 'log'> & { connections: number, rows: number, log: (line: string) => void }): Promise<boolean> {
  const rows = options.rows.toLocaleString('en-US')
  console.log(`large: rounds ${options.rounds} x ${options.seconds} s, ${options.connections} connections; empty database vs ${rows} rows in api_tokens and in messages`)
  const [emptyDb, largeDb] = await Promise.all([createBenchDatabase(), createBenchDatabase()])
  const emptyServer = await startOurServer('empty', emptyDb.url)
  const largeServer = await startOurServer('large', largeDb.url)
  const t0 = performance.now()
  options.log(`inserting ${rows} api_tokens and ${rows} messages (generate_series)`)
  await insertBulkRows(largeDb.url, options.rows)
  options.log(`inserted in ${((performance.now() - t0) / 1000).toFixed(0)} s`)
  const side = async (server: OurServer): Promise<Side> => {
    const token = await apiTokenFor(server, 'bench')
    const last = await seedChannel(server, token, 'bench-read', 20)
    return { server, token, after: last - 10 }
  }
  const rig: LargeRig = { connections: options.connections, empty: await side(emptyServer), large: await side(largeServer) }
  const outcomes = await runRounds(LARGE_TARGETS, rig, options)
  console.log('')
  console.log(renderTable(outcomes))
  console.log('')
  const failed = outcomes.some((o) => o.verdict === 'FAIL')
  console.log(`result: ${failed ? 'FAIL' : 'PASS'}`)
  return !failed
}
