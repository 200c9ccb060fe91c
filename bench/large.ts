import { createBenchDatabase, insertBulkRows } from './lib/database.ts'
import { httpMeasure, type Measure } from './lib/load.ts'
import { apiTokenFor, seedChannel, startOurServer, type OurServer } from './lib/ours.ts'
import { renderTable } from './lib/report.ts'
import { runRounds, type RoundOptions } from './lib/rounds.ts'
import { callTool, rpcHeaders, toolCallBody } from './lib/rpc.ts'
import { refreshMeasure } from './refresh.ts'
import { readMeasure, sendMeasure, type Target } from './targets.ts'

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

/** Each figure twice, on the empty database and on the large one; the large one within 10 %. */
function pair (key: string, label: string, measure: (rig: LargeRig, side: Side) => Promise<Measure>): Array<Target<LargeRig>> {
  return [
    { key: `${key}-empty`, label: `${label}, empty tables`, checks: [], setup: async (rig) => await measure(rig, rig.empty) },
    { key: `${key}-large`, label: `${label}, large tables`, checks: [{ kind: 'ratio', of: `${key}-empty`, min: 0.9 }], setup: async (rig) => await measure(rig, rig.large) }
  ]
}

const LARGE_TARGETS: Array<Target<LargeRig>> = [
  ...pair('whoami', 'whoami', whoami),
  ...pair('read', 'bus_read newest 10', read),
  ...pair('read20', 'bus_read 20 after id 0', async (rig, side) => await readMeasure(rig, side.server, side.token)),
  ...pair('send-hot', 'bus_send, one hot channel', async (rig, side) => await sendMeasure(rig, side.server, side.token, false)),
  ...pair('send-spread', 'bus_send, 90 channels and 10 inboxes', async (rig, side) => await sendMeasure(rig, side.server, side.token, true)),
  ...pair('refresh', 'token endpoint, refresh grant', async (rig, side) => await refreshMeasure(side.server, rig.connections))
]

/**
 * `--large`: two databases, one empty and one with a million rows in api_tokens and in
 * messages, each served by its own server process, measured in interleaved rounds so the
 * ratio large/empty comes from one run. Passes when both stay within 10 %.
 */
export async function runLarge (options: Omit<RoundOptions, 'log'> & { connections: number, rows: number, log: (line: string) => void }): Promise<boolean> {
  const rows = options.rows.toLocaleString('en-US')
  console.log(`large: rounds ${options.rounds} x ${options.seconds} s, ${options.connections} connections; empty database vs ${rows} rows in api_tokens, messages and audit_log`)
  const [emptyDb, largeDb] = await Promise.all([createBenchDatabase(), createBenchDatabase()])
  const emptyServer = await startOurServer('empty', emptyDb.url)
  const largeServer = await startOurServer('large', largeDb.url)
  const t0 = performance.now()
  options.log(`inserting ${rows} api_tokens, ${rows} messages and ${rows} audit rows (generate_series)`)
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
