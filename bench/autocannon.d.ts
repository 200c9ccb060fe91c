/** The subset of autocannon's programmatic API the benchmark uses (the package ships no types). */
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  export interface Histogram {
    average: number,
    mean: number,
    stddev: number,
    min: number,
    max: number,
    total: number
    p50: number,
    p90: number,
    p99: number,
    p99_9: number
  }

  export interface RequestContext { [key: string]: unknown }

  export interface RequestSpec {
    method?: string
    path?: string
    headers?: Record<string, string>
    body?: string | Buffer
    setupRequest?: (request: RequestSpec, context: RequestContext) => RequestSpec | undefined
    onResponse?: (status: number, body: string, context: RequestContext, headers: Record<string, string>) => void
  }

  export interface Options extends RequestSpec {
    url: string
    connections?: number
    duration?: number
    amount?: number
    timeout?: number
    pipelining?: number
    requests?: RequestSpec[]
    verifyBody?: (body: string) => boolean
  }

  export interface Result {
    duration: number
    errors: number
    timeouts: number
    mismatches: number
    non2xx: number
    latency: Histogram
    requests: Histogram & { sent: number }
    statusCodeStats: Record<string, { count: number }>
    '2xx': number
  }

  export interface Instance extends EventEmitter, PromiseLike<Result> {
    stop: () => void
  }

  function autocannon (options: Options): Instance
  export default autocannon
}
