import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'
import { createBenchDatabase } from './lib/database.ts'
import { percentile, type RoundResult } from './lib/load.ts'
import { apiTokenFor, seedChannel, startOurServer, type OurServer } from './lib/ours.ts'
import { readRss } from './lib/processes.ts'
import { callTool } from './lib/rpc.ts'
import { wakeMeasure } from './wake.ts'

export interface ListenBenchOptions {
  streams: number
  messages: number
  log: (line: string) => void
}

const MODERN = '2026-07-28'
const META = { 'io.modelcontextprotocol/protocolVersion': MODERN, 'io.modelcontextprotocol/clientCapabilities': {} }
const MESSAGE_ID = /"bus-mcp\/messageId":(\d+)/g
/** The issue's promise: a send is heard within a second, on any replica. */
const MAX_P99_MS = 1000

/**
 * `subscriptions/listen` at scale: `streams` listen streams open on replica A, sends one at a
 * time through replica B; for every (message, stream) pair, the time from issuing the send to
 * the notification arriving. Side by side in the same run, the long-poll's wake-up across the
 * same two replicas (bench/wake.ts), the path push replaces. Memory per stream is A's resident
 * set and heap before and after opening the streams, divided by their number.
 */
export async function runListen (options: ListenBenchOptions): Promise<boolean> {
  const { log } = options
  const database = await createBenchDatabase()
  const a = await startOurServer('listener replica A', database.url, [], { MAX_LISTEN_STREAMS: String(options.streams + 10) })
  const b = await startOurServer('sender replica B', database.url)
  const token = await apiTokenFor(a, 'bench-listener')
  const senderToken = await apiTokenFor(a, 'bench-sender')
  const channel = 'bench-live'
  const lastId = await seedChannel(a, senderToken, channel, 1)

  const before = await memoryOf(a)
  const dispatcher = new Agent({ connections: null, pipelining: 0, keepAliveTimeout: 60_000 })
  const arrivals = new Map<number, number[]>()
  const aborts: AbortController[] = []
  let acknowledged = 0
  const opened = performance.now()
  for (let i = 0; i < options.streams; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, options.streams - i) }, async () => {
      const controller = new AbortController()
      aborts.push(controller)
      const response = await request(a.mcpUrl, {
        method: 'POST',
        dispatcher,
        signal: controller.signal,
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          authorization: `Bearer ${token}`,
          'mcp-protocol-version': MODERN,
          'mcp-method': 'subscriptions/listen'
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: [`bus://channels/${channel}`] } } })
      })
      if (!String(response.headers['content-type']).startsWith('text/event-stream')) throw new Error(`listen refused: ${await response.body.text()}`)
      response.body.on('data', (chunk: Buffer) => {
        const now = performance.now()
        const text = chunk.toString('utf8')
        if (text.includes('subscriptions/acknowledged')) acknowledged++
        for (const match of text.matchAll(MESSAGE_ID)) {
          const id = Number(match[1])
          let list = arrivals.get(id)
          if (list === undefined) arrivals.set(id, list = [])
          list.push(now)
        }
      })
      response.body.on('error', () => {})
    }))
  }
  while (acknowledged < options.streams) await sleep(10)
  log(`${options.streams} streams open on replica A in ${((performance.now() - opened) / 1000).toFixed(1)} s`)
  await sleep(2000)
  const after = await memoryOf(a)

  // One send at a time, so this is latency rather than throughput; each fans out to every stream.
  const sentAt = new Map<number, number>()
  for (let i = 0; i < options.messages; i++) {
    const started = performance.now()
    const sent = await callTool(b.mcpUrl, senderToken, 'bus_send', { channel, body: `live ${i}` })
    if (sent.isError) throw new Error(`bus_send failed: ${JSON.stringify(sent.data)}`)
    sentAt.set(sent.data.id as number, started)
    await sleep(20)
  }
  const deadline = Date.now() + 10_000
  while ([...sentAt.keys()].some((id) => (arrivals.get(id)?.length ?? 0) < options.streams) && Date.now() < deadline) await sleep(50)

  const latencies: number[] = []
  const fanOut: number[] = []
  let missing = 0
  for (const [id, at] of sentAt) {
    const got = arrivals.get(id) ?? []
    missing += Math.max(0, options.streams - got.length)
    for (const arrival of got) latencies.push(arrival - at)
    if (got.length > 0) fanOut.push(Math.max(...got) - at)
  }
  latencies.sort((x, y) => x - y)
  fanOut.sort((x, y) => x - y)
  for (const controller of aborts) controller.abort()
  await dispatcher.close().catch(() => {})

  // The long-poll across the same replicas, in the same run (one probe at a time).
  const wake: RoundResult = await wakeMeasure(b, a, senderToken, channel, lastId + options.messages)(5)
  const wakeLatencies = [...wake.latencies].sort((x, y) => x - y)

  const p50 = percentile(latencies, 0.5)
  const p99 = percentile(latencies, 0.99)
  const wake50 = percentile(wakeLatencies, 0.5)
  const wake99 = percentile(wakeLatencies, 0.99)
  const perStream = (key: 'rss' | 'heap'): string => `${((after[key] - before[key]) / options.streams / 1024).toFixed(1)} KiB`
  console.log('')
  console.log(`| measure (${options.streams} listen streams on A, sends through B, PostgreSQL) | p50 | p99 | max |`)
  console.log('|---|---|---|---|')
  console.log(`| listen: send issued → notification on a stream (${latencies.length} deliveries, ${missing} missing) | ${p50.toFixed(1)} ms | ${p99.toFixed(1)} ms | ${(latencies.at(-1) ?? 0).toFixed(1)} ms |`)
  console.log(`| listen: send issued → the last of ${options.streams} streams notified (${fanOut.length} messages) | ${percentile(fanOut, 0.5).toFixed(1)} ms | ${percentile(fanOut, 0.99).toFixed(1)} ms | ${(fanOut.at(-1) ?? 0).toFixed(1)} ms |`)
  console.log(`| long-poll: send issued → the waiting bus_read answers (${wakeLatencies.length} probes, same replicas) | ${wake50.toFixed(1)} ms | ${wake99.toFixed(1)} ms | ${(wakeLatencies.at(-1) ?? 0).toFixed(1)} ms |`)
  console.log('')
  console.log(`listen / long-poll latency ratio: p50 ${(p50 / wake50).toFixed(2)}x, p99 ${(p99 / wake99).toFixed(2)}x`)
  console.log(`memory per open stream on A: resident ${perStream('rss')}, JS heap ${perStream('heap')} (A: ${(before.rss / 1048576).toFixed(0)} MiB resident before, ${(after.rss / 1048576).toFixed(0)} MiB with the streams)`)
  const ok = missing === 0 && p99 <= MAX_P99_MS
  console.log(`result: ${ok ? 'PASS' : 'FAIL'} (every notification delivered: ${missing === 0 ? 'yes' : `no, ${missing} missing`}; p99 ${p99.toFixed(0)} ms ≤ ${MAX_P99_MS} ms: ${p99 <= MAX_P99_MS ? 'yes' : 'no'})`)
  await Promise.allSettled([a.stop(), b.stop()])
  await database.drop()
  return ok
}

/** Resident set (from /proc) and JS heap in use (from the server's own /metrics). */
async function memoryOf (server: OurServer): Promise<{ rss: number, heap: number }> {
  const metrics = await (await fetch(`${server.adminUrl}/metrics`)).text()
  const heap = Number(/^bus_nodejs_heap_size_used_bytes (\d+(?:\.\d+)?)/m.exec(metrics)?.[1] ?? 0)
  return { rss: readRss(server.pid), heap }
}
