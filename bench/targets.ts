import { httpMeasure, type Measure } from './lib/load.ts'
import { seedChannel, type OurServer } from './lib/ours.ts'
import type { ServerProcess } from './lib/processes.ts'
import { callTool, rpcHeaders, toolCallBody } from './lib/rpc.ts'
import { wakeMeasure } from './wake.ts'

/** A pass/fail rule, evaluated on the summaries of one run. */
export type Check =
  /** req/s at least `min` times that of target `of`, measured in the same run. */
  | { kind: 'ratio', of: string, min: number }
  /** p99 latency at most `maxMs` over every round of the run. */
  | { kind: 'p99', maxMs: number }

/**
 * One row of the benchmark table. Every target must also finish without errors or non-2xx
 * replies. Adding one: give it a key, a label, its checks and a `setup` that prepares what it
 * needs (tokens, data) on the rig and returns how to measure one round.
 */
export interface Target<R = Rig> {
  key: string
  label: string
  /** Not measurable yet: the reason is printed in the table instead of figures. */
  pending?: string
  /** One probe at a time: a latency, not a throughput (req/s is not shown). */
  latencyOnly?: boolean
  checks: Check[]
  setup?: (rig: R) => Promise<Measure>
}

/** The processes of a default run, shared by all targets. */
export interface Rig {
  connections: number
  /** Bearer token of the two reference servers (held in their memory). */
  referenceToken: string
  ceiling: ServerProcess
  anchor: ServerProcess
  /** Two replicas of our server on one PostgreSQL database. */
  replicaA: OurServer
  replicaB: OurServer
  /** An API token of principal "bench" (bus:read bus:write), valid on both replicas. */
  apiToken: string
}

/** whoami, the same request for every server: the cheapest authenticated tool call. */
async function whoamiMeasure (rig: Rig, server: ServerProcess, token: string, expectAuth: string): Promise<Measure> {
  const url = `${server.url}/mcp`
  const check = await callTool(url, token, 'whoami')
  if (check.isError || check.data.principal !== 'bench' || check.data.auth !== expectAuth) {
    throw new Error(`whoami on ${url} did not answer as expected: ${JSON.stringify(check)}`)
  }
  return httpMeasure({ url, servers: [server], connections: rig.connections, headers: rpcHeaders(token), body: toolCallBody('whoami') })
}

const MIX_BODY = 'deploy finished: build 4711 is live on staging; smoke tests passed, 0 errors, rollout continues at 14:00 UTC.'

const MIX_CHANNELS = 8

/**
 * Bus traffic: each connection is an agent that posts to one of eight channels and then reads
 * what is new there since its own post (bus_send, then bus_read after its id, limit 10).
 */
async function mixMeasure (rig: Rig, server: OurServer, token: string): Promise<Measure> {
  const channels = Array.from({ length: MIX_CHANNELS }, (_, i) => `bench-mix-${i}`)
  for (const channel of channels) await seedChannel(server, token, channel, 2)
  const idOfSend = /"structuredContent":\{"id":(\d+)/
  return httpMeasure({
    url: server.mcpUrl,
    servers: [server],
    connections: rig.connections,
    headers: rpcHeaders(token),
    requests: [
      {
        setupRequest: (request, context) => {
          const channel = channels[Math.floor(Math.random() * channels.length)] as string
          context.channel = channel
          return { ...request, body: toolCallBody('bus_send', { channel, body: MIX_BODY }) }
        },
        onResponse: (_status, body, context) => {
          const match = idOfSend.exec(body)
          if (match !== null) context.lastId = Number(match[1])
        }
      },
      {
        setupRequest: (request, context) => ({
          ...request,
          body: toolCallBody('bus_read', { channel: context.channel, after: Math.max(0, Number(context.lastId ?? 1) - 1), limit: 10 })
        })
      }
    ]
  })
}

/** bus_read of the newest ten messages of a channel: the read half of the mix on its own. */
async function readMeasure (rig: Rig, server: OurServer, token: string): Promise<Measure> {
  const channel = 'bench-read'
  const last = await seedChannel(server, token, channel, 20)
  const args = { channel, after: last - 10, limit: 10 }
  const check = await callTool(server.mcpUrl, token, 'bus_read', args)
  if (check.isError || check.data.messages.length !== 10) throw new Error(`bus_read did not answer as expected: ${JSON.stringify(check)}`)
  return httpMeasure({ url: server.mcpUrl, servers: [server], connections: rig.connections, headers: rpcHeaders(token), body: toolCallBody('bus_read', args) })
}

/**
 * An OAuth access token for principal "bench": a confidential client pre-registered for it,
 * then the client_credentials grant at the real token endpoint.
 */
async function oauthAccessToken (server: OurServer): Promise<string> {
  const client = await (await fetch(`${server.adminUrl}/clients`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench', principal: 'bench', confidential: true })
  })).json() as { client_id: string, client_secret: string }
  const response = await fetch(`${server.url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.client_id, client_secret: client.client_secret })
  })
  const tokens = await response.json() as { access_token?: string }
  if (tokens.access_token === undefined) throw new Error(`client_credentials failed: ${response.status} ${JSON.stringify(tokens)}`)
  return tokens.access_token
}

const WHOAMI_CHECKS: Check[] = [
  { kind: 'ratio', of: 'anchor', min: 5 },
  { kind: 'ratio', of: 'ceiling', min: 0.4 },
  { kind: 'p99', maxMs: 25 }
]

export const TARGETS: Array<Target<Rig>> = [
  {
    key: 'ceiling',
    label: 'ceiling: bare Fastify route, canned whoami',
    checks: [],
    setup: async (rig) => await whoamiMeasure(rig, rig.ceiling, rig.referenceToken, 'api_token')
  },
  {
    key: 'anchor',
    label: 'anchor: SDK stateless Express, whoami',
    checks: [],
    setup: async (rig) => await whoamiMeasure(rig, rig.anchor, rig.referenceToken, 'api_token')
  },
  {
    key: 'whoami-api',
    label: 'ours: whoami, API token',
    checks: WHOAMI_CHECKS,
    setup: async (rig) => await whoamiMeasure(rig, rig.replicaA, rig.apiToken, 'api_token')
  },
  {
    key: 'whoami-oauth',
    label: 'ours: whoami, OAuth access token',
    checks: WHOAMI_CHECKS,
    setup: async (rig) => await whoamiMeasure(rig, rig.replicaA, await oauthAccessToken(rig.replicaA), 'oauth')
  },
  {
    key: 'mix',
    label: 'ours: bus_send + bus_read, 8 channels',
    checks: [{ kind: 'p99', maxMs: 25 }],
    setup: async (rig) => await mixMeasure(rig, rig.replicaA, rig.apiToken)
  },
  {
    key: 'read',
    label: 'ours: bus_read newest 10',
    checks: [{ kind: 'p99', maxMs: 25 }],
    setup: async (rig) => await readMeasure(rig, rig.replicaA, rig.apiToken)
  },
  {
    key: 'refresh',
    label: 'ours: token endpoint, refresh grant',
    pending: 'a refresh token works once (rotation), so autocannon\'s one repeated body cannot drive it; needs a driver that chains tokens',
    checks: [{ kind: 'p99', maxMs: 25 }]
  },
  {
    key: 'wake',
    label: 'ours: bus_read wake-up, send on A -> read on B',
    latencyOnly: true,
    checks: [],
    setup: async (rig) => {
      const channel = 'bench-wake'
      const last = await seedChannel(rig.replicaA, rig.apiToken, channel, 1)
      return wakeMeasure(rig.replicaA, rig.replicaB, rig.apiToken, channel, last)
    }
  }
]

