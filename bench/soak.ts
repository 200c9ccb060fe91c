import { setTimeout as sleep } from 'node:timers/promises'
import type { RequestSpec } from 'autocannon'
import { createBenchDatabase } from './lib/database.ts'
import { runHttpLoad, summarize } from './lib/load.ts'
import { apiTokenFor, seedChannel, startOurServer } from './lib/ours.ts'
import { rpcHeaders, toolCallBody } from './lib/rpc.ts'

export interface SoakOptions { requests: number, connections: number, log: (line: string) => void }

const WARMUP_REQUESTS = 50_000
const MAX_GROWTH = 0.10
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`

/**
 * `--soak`: resident memory of one server process over N requests (per connection, cycles of
 * six whoami, one bus_send and one bus_read), after a warm-up that lets JIT, pools and caches reach
 * their working size. Passes when the RSS floor of the last tenth of the requests is at most
 * 10 % above that of the first tenth.
 */
export async function runSoak (options: SoakOptions): Promise<boolean> {
  console.log(`soak: ${options.requests} requests (6 whoami, 1 bus_send, 1 bus_read per cycle) at ${options.connections} connections after ${WARMUP_REQUESTS} warm-up requests`)
  const database = await createBenchDatabase()
  const server = await startOurServer('soak', database.url)
  const token = await apiTokenFor(server, 'bench')
  const channel = 'bench-soak'
  await seedChannel(server, token, channel, 10)
  const idOfSend = /"structuredContent":\{"id":(\d+)/
  // Per cycle of eight: six whoami, one bus_send, one bus_read of what is new since that send.
  // Sends are few because each waits for its commit's WAL flush (see docs/benchmarks.md); the
  // soak is about memory per request, so most requests take the auth + MCP dispatch path.
  const whoami: RequestSpec = { body: toolCallBody('whoami') }
  const requests: RequestSpec[] = [
    whoami, whoami, whoami, whoami, whoami, whoami,
    {
      body: toolCallBody('bus_send', { channel, body: 'soak message with a little text in it, about a hundred bytes long, like a status update' }),
      onResponse: (_status, body, context) => {
        const match = idOfSend.exec(body)
        if (match !== null) context.lastId = Number(match[1])
      }
    },
    {
      setupRequest: (request, context) => ({
        ...request,
        body: toolCallBody('bus_read', { channel, after: Math.max(0, Number(context.lastId ?? 1) - 1), limit: 10 })
      })
    }
  ]
  const load = { url: server.mcpUrl, connections: options.connections, headers: rpcHeaders(token), requests }

  options.log(`warm-up  ${WARMUP_REQUESTS} requests`)
  await runHttpLoad({ ...load, amount: WARMUP_REQUESTS }, 0)
  await sleep(3000)
  const before = server.rssBytes()
  options.log(`rss after warm-up ${mib(before)}`)

  // RSS saws up and down with garbage collection, so one reading says little: sample every
  // second and compare the floors (the lowest reading) of the first and the last tenth of the
  // requests. Retained memory (a leak) lifts the floor; garbage awaiting collection does not.
  let completed = 0
  let lastReport = 0
  const samples: Array<{ completed: number, rss: number }> = []
  const sampler = setInterval(() => { samples.push({ completed, rss: server.rssBytes() }) }, 1000)
  const result = await runHttpLoad({
    ...load,
    amount: options.requests,
    onTick: (n) => {
      completed = n
      if (n - lastReport >= 100_000) {
        lastReport = n
        options.log(`${n} requests, rss ${mib(server.rssBytes())}`)
      }
    }
  }, 0)
  clearInterval(sampler)
  await sleep(5000)
  const afterIdle = server.rssBytes()
  const floor = (from: number, to: number, fallback: { rss: number } | undefined): number => {
    const inRange = samples.filter((x) => x.completed >= from && x.completed <= to)
    return Math.min(...(inRange.length > 0 ? inRange : fallback === undefined ? [] : [fallback]).map((x) => x.rss))
  }
  const tenth = options.requests / 10
  const startFloor = floor(0, tenth, samples[0])
  const endFloor = floor(options.requests - tenth, options.requests, samples.at(-1))
  const peak = Math.max(...samples.map((x) => x.rss))
  const summary = summarize([result])
  const growth = endFloor / startFloor - 1
  const ok = Number.isFinite(growth) && growth <= MAX_GROWTH && summary.errors === 0 && summary.non2xx === 0
  console.log('')
  console.log('| requests | req/s | p50 ms | p99 ms | errors | non-2xx | RSS after warm-up | RSS floor, first 10 % | RSS floor, last 10 % | peak | RSS 5 s after | floor growth | result |')
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  console.log(`| ${summary.count} | ${Math.round(summary.rate)} | ${summary.p50.toFixed(2)} | ${summary.p99.toFixed(2)} | ${summary.errors} | ${summary.non2xx} | ${mib(before)} | ${mib(startFloor)} | ${mib(endFloor)} | ${mib(peak)} | ${mib(afterIdle)} | ${(growth * 100).toFixed(1)} % | **${ok ? 'PASS' : 'FAIL'}** (<= ${MAX_GROWTH * 100} %) |`)
  const step = Math.max(1, Math.floor(samples.length / 20))
  console.log(`rss samples (requests: MiB): ${samples.filter((_, i) => i % step === 0).map((x) => `${x.completed}: ${(x.rss / 2 ** 20).toFixed(0)}`).join(', ')}`)
  return ok
}
