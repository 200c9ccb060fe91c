import { randomBytes } from 'node:crypto'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon, { type Options as LoadOptions } from 'autocannon'
import { createBenchDatabase } from './lib/database.ts'
import { percentile } from './lib/load.ts'
import { startOurServer, type OurServer } from './lib/ours.ts'
import { callTool, isSuccessfulToolReply, rpcHeaders, toolCallBody } from './lib/rpc.ts'

export interface FloodOptions {
  tokens: number
  rounds: number
  seconds: number
  warmupSeconds: number
  connections: number
  log: (line: string) => void
}

/** The target: a flood may slow the valid client's p99 by at most this factor. */
const MAX_P99_RATIO = 2
/** src/mcp/auth-hook.ts: failures per address and minute before the slow lane and pacing. */
const FAILURES_PER_MINUTE = 30
/** src/auth/authenticator.ts: the slow lane runs at most one batch per interval, of at most this many hashes. */
const LANE_INTERVAL_MS = 100
const LANE_BATCH_SIZE = 100
/** src/auth/authenticator.ts: a valid token is looked up again when its cache entry ends. */
const CACHE_TTL_MS = 30_000

/**
 * What reaches PostgreSQL: a TCP proxy between the server and the database that reads the
 * frontend protocol (Parse/Bind/Execute and simple Query) and counts executions of the
 * authenticator's token lookups (a query reading api_tokens or oauth_tokens by token_hash),
 * and the token hashes they ask about (one, or the entries of a batch's hex-digest array).
 */
class LookupCountingProxy {
  queries = 0
  batched = 0
  hashes = 0
  /** Every statement executed, whatever it was. */
  statements = 0
  port = 0
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()

  async start (databaseUrl: string): Promise<string> {
    const real = new URL(databaseUrl)
    const target = { host: real.hostname, port: Number(real.port === '' ? 5432 : real.port) }
    const server = createServer((client) => {
      const upstream = connect(target.port, target.host)
      for (const socket of [client, upstream]) {
        this.sockets.add(socket)
        socket.on('close', () => { this.sockets.delete(socket) })
        socket.on('error', () => {})
      }
      const reader = new FrontendReader((query, parameters) => { this.count(query, parameters) })
      client.on('data', (chunk: Buffer) => {
        reader.push(chunk)
        if (!upstream.write(chunk)) client.pause()
      })
      upstream.on('drain', () => client.resume())
      upstream.pipe(client)
      client.on('close', () => upstream.destroy())
      upstream.on('close', () => client.destroy())
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => { resolve() })
    })
    this.server = server
    this.port = (server.address() as { port: number }).port
    const proxied = new URL(databaseUrl)
    proxied.hostname = '127.0.0.1'
    proxied.port = String(this.port)
    return proxied.toString()
  }

  snapshot (): { queries: number, batched: number, hashes: number, statements: number } {
    return { queries: this.queries, batched: this.batched, hashes: this.hashes, statements: this.statements }
  }

  async stop (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await new Promise<void>((resolve) => { this.server?.close(() => { resolve() }) ?? resolve() })
  }

  private count (query: string, parameters: string[]): void {
    this.statements++
    if (!/from (api_tokens|oauth_tokens) t\b/.test(query) || !query.includes('where t.token_hash')) return
    this.queries++
    if (query.includes('any(array(')) {
      this.batched++
      const list = parameters.find((p) => p.startsWith('{'))
      this.hashes += list === undefined || list === '{}' ? 0 : list.split(',').length
    } else {
      this.hashes++
    }
  }
}

/** Reads PostgreSQL frontend messages from a byte stream and reports every statement executed. */
class FrontendReader {
  private buffer: Buffer = Buffer.alloc(0)
  private started = false
  private readonly statements = new Map<string, string>()
  private readonly portals = new Map<string, { query: string, parameters: string[] }>()
  private readonly onExecute: (query: string, parameters: string[]) => void

  constructor (onExecute: (query: string, parameters: string[]) => void) {
    this.onExecute = onExecute
  }

  push (chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk])
    for (;;) {
      if (!this.started) {
        // SSLRequest, GSSENCRequest and StartupMessage have no type byte.
        if (this.buffer.length < 8) return
        const length = this.buffer.readInt32BE(0)
        if (this.buffer.length < length) return
        if (this.buffer.readInt32BE(4) === 196608) this.started = true
        this.buffer = this.buffer.subarray(length)
        continue
      }
      if (this.buffer.length < 5) return
      const length = this.buffer.readInt32BE(1)
      if (this.buffer.length < 1 + length) return
      const type = String.fromCharCode(this.buffer[0] as number)
      const body = this.buffer.subarray(5, 1 + length)
      this.buffer = this.buffer.subarray(1 + length)
      this.message(type, body)
    }
  }

  private message (type: string, body: Buffer): void {
    let at = 0
    const cstring = (): string => {
      const end = body.indexOf(0, at)
      const text = body.toString('utf8', at, end)
      at = end + 1
      return text
    }
    if (type === 'P') {
      const name = cstring()
      this.statements.set(name, cstring())
    } else if (type === 'B') {
      const portal = cstring()
      const statement = cstring()
      const formats = body.readInt16BE(at)
      at += 2 + 2 * formats
      const count = body.readInt16BE(at)
      at += 2
      const parameters: string[] = []
      for (let i = 0; i < count; i++) {
        const length = body.readInt32BE(at)
        at += 4
        if (length < 0) continue
        parameters.push(body.toString('utf8', at, at + length))
        at += length
      }
      this.portals.set(portal, { query: this.statements.get(statement) ?? '', parameters })
    } else if (type === 'E') {
      const bound = this.portals.get(cstring())
      if (bound !== undefined) this.onExecute(bound.query, bound.parameters)
    } else if (type === 'Q') {
      this.onExecute(cstring(), [])
    }
  }
}

/** Our server as production runs it, with its rate limits ON (RATE_LIMIT_MULTIPLIER=1), unlike every other bench mode. */
async function startServer (databaseUrl: string): Promise<OurServer> {
  return await startOurServer('flood', databaseUrl, [], { RATE_LIMIT_MULTIPLIER: '1' })
}

async function admin (server: OurServer, path: string, body: unknown = {}): Promise<any> {
  const response = await fetch(`${server.adminUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const data = await response.json() as any
  if (response.status >= 300) throw new Error(`admin POST ${path}: HTTP ${response.status} ${JSON.stringify(data)}`)
  return data
}

interface Sample { at: number, ms: number, status: number }

/** A load that runs until stopped (or until `amount` answers), every answer timed and stamped. */
function startLoad (options: LoadOptions): { samples: Sample[], done: Promise<{ errors: number }>, stop: () => void } {
  const samples: Sample[] = []
  const instance = autocannon({ method: 'POST', timeout: 30, ...options })
  instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
    samples.push({ at: performance.now(), ms: responseTime, status })
  })
  const done = (async () => {
    const result = await instance
    return { errors: result.errors + result.mismatches }
  })()
  return { samples, done, stop: () => { instance.stop() } }
}

type Flavor = 'distinct' | 'revoked'
const FLAVOR_LABEL: Record<Flavor, string> = {
  distinct: 'distinct never-issued tokens (half bus_api_, half bus_at_)',
  revoked: 'one revoked API token, repeated'
}

interface Window { flood: boolean, from: number, to: number }

interface FlavorResult {
  flavor: Flavor
  windows: Window[]
  valid: Sample[]
  validErrors: number
  flood: Sample[]
  /** Bad tokens put on the wire: a little more than those answered (requests in flight when a window ended). */
  sent: number
  floodSeconds: number
  lookups: { queries: number, batched: number, hashes: number, bound: number, hashBound: number }
}

/** Answers that arrived within 250 ms of a switch are left out: they straddle both states. */
const SETTLE_MS = 250

/**
 * `--flood`: one server with its real limits on PostgreSQL, behind a proxy that counts the
 * token lookups reaching the database. A valid client (whoami with an API token, `connections`
 * connections) runs without pause while one address (the same 127.0.0.1) floods /mcp with
 * `tokens` bad tokens over as many connections, in windows of `seconds`: flood on, flood off,
 * on, off… until every bad token was answered; once for each kind of flood. The valid client's
 * answers in the "off" windows are its figures alone, those in the "on" windows its figures
 * during the flood: measured side by side, so a noisy machine weighs on both. Passes when the
 * valid client never fails, its p99 during each flood is at most 2x its p99 alone, and the
 * lookups stay within the bound the limiter sets (docs/decisions/0023-bearer-lookup-budget.md).
 */
export async function runFlood (options: FloodOptions): Promise<boolean> {
  console.log(`flood: ${options.tokens} bad tokens per kind of flood, in windows of ${options.seconds} s (flood on, off, on…), beside a valid client; ${options.connections} connections each, all from 127.0.0.1; rate limits on (RATE_LIMIT_MULTIPLIER=1)`)
  const database = await createBenchDatabase()
  const proxy = new LookupCountingProxy()
  const server = await startServer(await proxy.start(database.url))
  try {
    await admin(server, '/principals', { name: 'bench', scopes: 'bus:read bus:write' })
    const valid = (await admin(server, '/tokens', { principal: 'bench', label: 'valid client' })).token as string
    const revoked = await admin(server, '/tokens', { principal: 'bench', label: 'revoked' })
    if ((await callTool(server.mcpUrl, revoked.token as string, 'whoami')).isError) throw new Error('the token to revoke did not work')
    await admin(server, `/tokens/${revoked.id as number}/revoke`)
    const check = await callTool(server.mcpUrl, valid, 'whoami')
    if (check.isError || check.data.principal !== 'bench') throw new Error(`whoami did not answer as expected: ${JSON.stringify(check.data)}`)
    if ((await callTool(server.mcpUrl, revoked.token as string, 'whoami')).status !== 401) throw new Error('the revoked token was not refused')

    const validLoad = (): ReturnType<typeof startLoad> => startLoad({
      url: server.mcpUrl,
      connections: options.connections,
      duration: 24 * 3600,
      headers: rpcHeaders(valid),
      body: toolCallBody('whoami'),
      verifyBody: (body: string) => isSuccessfulToolReply(body)
    })
    options.log(`warm-up ${options.warmupSeconds} s`)
    const warmup = validLoad()
    await sleep(options.warmupSeconds * 1000)
    warmup.stop()
    await warmup.done

    const results: FlavorResult[] = []
    for (const flavor of ['distinct', 'revoked'] as const) {
      const tokens = flavor === 'revoked'
        ? [revoked.token as string]
        : Array.from({ length: options.tokens }, (_, i) => `${i % 2 === 0 ? 'bus_api_' : 'bus_at_'}${randomBytes(32).toString('base64url')}`)
      let next = 0
      const windows: Window[] = []
      const flood: Sample[] = []
      let floodSeconds = 0
      const before = proxy.snapshot()
      const started = performance.now()
      const client = validLoad()
      while (flood.length < options.tokens) {
        const off = performance.now()
        await sleep(options.seconds * 1000)
        windows.push({ flood: false, from: off, to: performance.now() })
        const on = performance.now()
        const load = startLoad({
          url: server.mcpUrl,
          connections: Math.min(options.connections, options.tokens - flood.length),
          amount: options.tokens - flood.length,
          headers: rpcHeaders('placeholder'),
          body: toolCallBody('whoami'),
          requests: [{
            setupRequest: (request: any) => ({ ...request, headers: { ...request.headers, authorization: `Bearer ${tokens[next++ % tokens.length] as string}` } })
          }]
        })
        const timer = setTimeout(() => { load.stop() }, options.seconds * 1000)
        await load.done
        clearTimeout(timer)
        windows.push({ flood: true, from: on, to: performance.now() })
        floodSeconds += (performance.now() - on) / 1000
        flood.push(...load.samples)
      }
      const off = performance.now()
      await sleep(options.seconds * 1000)
      windows.push({ flood: false, from: off, to: performance.now() })
      client.stop()
      const { errors } = await client.done
      await sleep(200)
      const after = proxy.snapshot()
      const seconds = (performance.now() - started) / 1000
      const batches = Math.ceil(seconds * 1000 / LANE_INTERVAL_MS) + 1
      const immediate = FAILURES_PER_MINUTE * (Math.ceil(seconds / 60) + 1) + Math.ceil(seconds * 1000 / CACHE_TTL_MS) + 1
      const result: FlavorResult = {
        flavor,
        windows,
        valid: client.samples,
        validErrors: errors,
        flood,
        sent: next,
        floodSeconds,
        lookups: {
          queries: after.queries - before.queries,
          batched: after.batched - before.batched,
          hashes: after.hashes - before.hashes,
          bound: immediate + 2 * batches,
          hashBound: immediate + LANE_BATCH_SIZE * batches
        }
      }
      results.push(result)
      const [alone, during] = split(result)
      options.log(`${flavor}: ${windows.filter((w) => w.flood).length} flood windows; valid p99 ${p99(alone).toFixed(2)} ms alone, ${p99(during).toFixed(2)} ms during the flood; flood ${next} sent, ${flood.length} answered in ${floodSeconds.toFixed(1)} s (${statusList(flood)}); token lookups ${result.lookups.queries} queries (${result.lookups.batched} batched), ${result.lookups.hashes} hashes`)
    }
    return report(results, options)
  } finally {
    await server.stop()
    await proxy.stop()
    await database.drop()
  }
}

/** The valid client's answers in the flood-off windows and in the flood-on windows. */
function split (result: FlavorResult): [Sample[], Sample[]] {
  const inWindow = (flood: boolean) => result.valid.filter((s) => result.windows.some((w) => w.flood === flood && s.at >= w.from + SETTLE_MS && s.at < w.to))
  return [inWindow(false), inWindow(true)]
}

const sortedMs = (samples: Sample[]): number[] => samples.map((s) => s.ms).sort((a, b) => a - b)
const p99 = (samples: Sample[]): number => percentile(sortedMs(samples), 0.99)
const p50 = (samples: Sample[]): number => percentile(sortedMs(samples), 0.5)

function rate (samples: Sample[], windows: Window[]): number {
  const seconds = windows.reduce((n, w) => n + Math.max(0, w.to - w.from - SETTLE_MS), 0) / 1000
  return seconds > 0 ? samples.length / seconds : 0
}

function statusList (samples: Sample[]): string {
  const statuses = new Map<number, number>()
  for (const s of samples) statuses.set(s.status, (statuses.get(s.status) ?? 0) + 1)
  return [...statuses].sort((a, b) => a[0] - b[0]).map(([status, n]) => `${n} x ${status}`).join(', ')
}

function report (results: FlavorResult[], options: FloodOptions): boolean {
  console.log('')
  console.log('| flood from the valid client\'s address | valid client alone: req/s, p50 / p99 ms | during the flood: req/s, p50 / p99 ms | p99 x alone | valid client failures | bad tokens sent | their answers | flood req/s | token lookup queries (batched) | token hashes looked up | bound: queries / hashes | result |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  let ok = true
  for (const result of results) {
    const [alone, during] = split(result)
    const ratio = p99(during) / p99(alone)
    const failures = result.validErrors + result.valid.filter((s) => s.status !== 200).length
    const { queries, batched, hashes, bound, hashBound } = result.lookups
    const pass = failures === 0 && ratio <= MAX_P99_RATIO && queries <= bound && hashes <= hashBound && result.flood.length >= options.tokens
    ok &&= pass
    const windows = (flood: boolean): Window[] => result.windows.filter((w) => w.flood === flood)
    console.log(`| ${options.tokens.toLocaleString('en-US')} ${FLAVOR_LABEL[result.flavor]} | ${Math.round(rate(alone, windows(false)))}, ${p50(alone).toFixed(2)} / ${p99(alone).toFixed(2)} | ${Math.round(rate(during, windows(true)))}, ${p50(during).toFixed(2)} / ${p99(during).toFixed(2)} | ${ratio.toFixed(2)} | ${failures} | ${result.sent} | ${statusList(result.flood)} | ${Math.round(result.flood.length / result.floodSeconds)} | ${queries} (${batched}) | ${hashes} | ${bound} / ${hashBound} | **${pass ? 'PASS' : 'FAIL'}** |`)
  }
  console.log('')
  console.log(`checks: the valid client never fails; its p99 during each flood <= ${MAX_P99_RATIO}x its p99 alone (flood-off windows of the same run); every bad token answered; token lookups within the bound (${FAILURES_PER_MINUTE} failed lookups a minute at once, + one slow-lane batch per ${LANE_INTERVAL_MS} ms of at most two queries and ${LANE_BATCH_SIZE} hashes, + the valid client's own token once per ${CACHE_TTL_MS / 1000} s, over the whole run of that flood)`)
  console.log(`result: ${ok ? 'PASS' : 'FAIL'}`)
  return ok
}
