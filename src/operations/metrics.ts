import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { AuditEntry } from '../audit/audit-log.ts'

export interface MetricsSources {
  /** Long-polls waiting in this process. */
  waitingLongPolls: () => number
  /** subscriptions/listen streams open in this process. */
  openListenStreams: () => number
  /** Credentials cached by the auth hook. */
  cachedCredentials: () => number
  databasePoolMax: number
  databaseKind: string
}

/**
 * Prometheus metrics of one process (served on the admin listener at /metrics). Its own
 * registry, so several servers in one process (tests) do not collide. Tool calls, tokens and
 * registrations are counted from the audit stream, so the two can never disagree.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly httpRequests = new Counter({ name: 'bus_http_requests_total', help: 'HTTP requests on the public listener', labelNames: ['method', 'route', 'status'] as const, registers: [this.registry] })
  readonly httpDuration = new Histogram({
    name: 'bus_http_request_duration_seconds',
    help: 'HTTP request latency on the public listener',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry]
  })

  readonly toolCalls = new Counter({ name: 'bus_tool_calls_total', help: 'MCP tool calls by tool and outcome', labelNames: ['tool', 'outcome', 'auth'] as const, registers: [this.registry] })
  readonly messages = new Counter({ name: 'bus_messages_sent_total', help: 'Messages posted on the bus by this process', registers: [this.registry] })
  readonly oauthEvents = new Counter({ name: 'bus_oauth_events_total', help: 'OAuth events: token issued/refreshed (by grant type), revoked, registrations, authorizations', labelNames: ['event', 'outcome'] as const, registers: [this.registry] })

  constructor (sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry, prefix: 'bus_' })
    // Gauges register themselves with the registry and are read through it.
    /* eslint-disable no-new */
    new Gauge({ name: 'bus_long_polls_waiting', help: 'bus_read calls waiting for a message in this process', registers: [this.registry], collect () { this.set(sources.waitingLongPolls()) } })
    new Gauge({ name: 'bus_listen_streams_open', help: 'subscriptions/listen streams open in this process', registers: [this.registry], collect () { this.set(sources.openListenStreams()) } })
    new Gauge({ name: 'bus_auth_cache_entries', help: 'Credentials cached by the /mcp auth hook', registers: [this.registry], collect () { this.set(sources.cachedCredentials()) } })
    /* eslint-enable no-new */
    new Gauge({ name: 'bus_database_pool_max', help: 'Maximum database connections of this process', labelNames: ['kind'] as const, registers: [this.registry] })
      .set({ kind: sources.databaseKind }, sources.databasePoolMax)
  }

  observeAudit (entry: AuditEntry): void {
    if (entry.kind === 'tool') {
      this.toolCalls.inc({ tool: entry.action, outcome: entry.outcome, auth: entry.authKind ?? 'unknown' })
      if (entry.action === 'bus_send' && entry.outcome === 'ok') this.messages.inc()
    } else if (entry.kind === 'oauth') {
      // token.authorization_code = issued, token.refresh_token = refreshed, revoke = revoked.
      this.oauthEvents.inc({ event: entry.action, outcome: entry.outcome })
    }
  }
}

/** Times every public request by its route pattern (never the raw URL: bounded label values). */
export const requestMetrics = fp(async function requestMetrics (fastify: FastifyInstance, { metrics }: { metrics: Metrics }) {
  fastify.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) })
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000)
  })
}, { name: 'request-metrics', fastify: '5.x' })
