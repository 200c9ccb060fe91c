import autocannon, { type RequestSpec } from 'autocannon'
import { isSuccessfulToolReply, type Era } from './rpc.ts'

/** What one measurement (one target, one round) produced. */
export interface RoundResult {
  /** Completed requests (or probes, for latency-only targets). */
  count: number
  seconds: number
  /** Every response time in ms, so rounds merge into exact percentiles. */
  latencies: number[]
  /** Connection errors, timeouts, and bodies that were not a successful tool result. */
  errors: number
  non2xx: number
  /** Probes thrown away as invalid measurements (reported, never silently). */
  discarded?: number
  /** CPU time the serving process(es) used during the round, in ms. */
  serverCpuMs?: number
}

export type Measure = (seconds: number) => Promise<RoundResult>

export interface HttpLoad {
  url: string
  connections: number
  headers: Record<string, string>
  /** Which protocol era the requests are in (what counts as a successful reply). Default legacy. */
  era?: Era
  /** One request repeated... */
  body?: string
  /** ...or a sequence each connection cycles through (autocannon `requests`). */
  requests?: RequestSpec[]
  /** The processes answering: their CPU time per request is reported (robust to a busy machine). */
  servers?: Array<{ cpuMs: () => number }>
  /** What counts as a successful reply (default: a successful tool result in the era). */
  verify?: (body: string) => boolean
  /** Fixed number of requests instead of a duration (soak). */
  amount?: number
  onTick?: (completed: number) => void
}

/**
 * Runs autocannon against one target. A non-2xx reply, and a body that is not a JSON-RPC result
 * (a JSON-RPC error), is a tool error, or in the modern era lacks `resultType: "complete"`,
 * counts as an error: a benchmark of error replies would be meaningless.
 */
export async function runHttpLoad (load: HttpLoad, seconds: number): Promise<RoundResult> {
  const latencies: number[] = []
  const cpu = (): number => (load.servers ?? []).reduce((n, s) => n + s.cpuMs(), 0)
  const cpuBefore = cpu()
  const started = performance.now()
  const instance = autocannon({
    url: load.url,
    method: 'POST',
    connections: load.connections,
    ...(load.amount !== undefined ? { amount: load.amount } : { duration: seconds }),
    timeout: 30,
    headers: load.headers,
    ...(load.body !== undefined ? { body: load.body } : {}),
    ...(load.requests !== undefined ? { requests: load.requests } : {}),
    verifyBody: load.verify ?? ((body: string) => isSuccessfulToolReply(body, load.era))
  })
  instance.on('response', (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
    latencies.push(responseTime)
    if (load.onTick !== undefined && latencies.length % 1000 === 0) load.onTick(latencies.length)
  })
  const result = await instance
  const elapsed = (performance.now() - started) / 1000
  return {
    count: latencies.length,
    seconds: elapsed,
    ...(load.servers !== undefined ? { serverCpuMs: cpu() - cpuBefore } : {}),
    latencies,
    errors: result.errors + result.mismatches,
    non2xx: result.non2xx
  }
}

export function httpMeasure (load: HttpLoad): Measure {
  return async (seconds) => await runHttpLoad(load, seconds)
}

/** Several rounds of one target as one figure. */
export interface Summary {
  count: number
  seconds: number
  rate: number
  roundRates: number[]
  p50: number
  p99: number
  max: number
  errors: number
  non2xx: number
  discarded: number
  /** Server CPU time per completed request, in ms (NaN when not measured). */
  cpuPerRequestMs: number
}

export function summarize (rounds: RoundResult[]): Summary {
  const all = rounds.flatMap((r) => r.latencies).sort((a, b) => a - b)
  const count = rounds.reduce((n, r) => n + r.count, 0)
  const seconds = rounds.reduce((n, r) => n + r.seconds, 0)
  return {
    count,
    seconds,
    rate: seconds > 0 ? count / seconds : 0,
    roundRates: rounds.map((r) => r.seconds > 0 ? r.count / r.seconds : 0),
    p50: percentile(all, 0.50),
    p99: percentile(all, 0.99),
    max: all.at(-1) ?? NaN,
    errors: rounds.reduce((n, r) => n + r.errors, 0),
    non2xx: rounds.reduce((n, r) => n + r.non2xx, 0),
    discarded: rounds.reduce((n, r) => n + (r.discarded ?? 0), 0),
    cpuPerRequestMs: rounds.every((r) => r.serverCpuMs !== undefined) && count > 0
      ? rounds.reduce((n, r) => n + (r.serverCpuMs ?? 0), 0) / count
      : NaN
  }
}

export function percentile (sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[index] as number
}
