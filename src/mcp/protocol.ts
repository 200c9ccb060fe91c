import { Readable } from 'node:stream'
import {
  classifyInboundRequest, PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY, type InboundClassificationOutcome
} from '@modelcontextprotocol/server'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { LEGACY_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSION, SERVER_INFO } from './sdk-server.ts'
import { RETRY_AFTER_SECONDS } from '../lib/errors.ts'
import { UNAVAILABLE_ERROR_CODE, type ToolCallParams, type ToolCallResult } from './tool-call.ts'

/** Bodies are bounded: a full 64 KiB message JSON-escaped, batches, and headroom. */
export const MCP_BODY_LIMIT = 512 * 1024
const MAX_BATCH = 100

type RequestId = string | number

/** An HTTP-level answer on /mcp: status, JSON-RPC error code, message, and the id to echo. */
export interface RpcProblem { status: number, code: number, message: string, id?: RequestId | null, data?: unknown }

export async function sendRpcError (reply: FastifyReply, problem: RpcProblem): Promise<FastifyReply> {
  const error = problem.data === undefined
    ? { code: problem.code, message: problem.message }
    : { code: problem.code, message: problem.message, data: problem.data }
  return await reply.code(problem.status).header('Cache-Control', 'no-store').send({ jsonrpc: '2.0', id: problem.id ?? null, error })
}

/**
 * Content negotiation before anything is parsed as JSON-RPC. We always answer with JSON (or
 * an SSE stream the SDK opens), so any Accept that allows JSON will do (decision 0006).
 */
export function checkMediaTypes (request: FastifyRequest): RpcProblem | undefined {
  // Fastify parses text/plain (and other plugins may add types): only JSON is JSON-RPC here.
  const type = request.headers['content-type']
  if (type === undefined || !/^application\/json\s*(;|$)/i.test(type)) {
    return { status: 415, code: -32000, message: 'Unsupported Media Type: Content-Type must be application/json' }
  }
  const accept = request.headers.accept
  if (accept !== undefined && !/application\/json|application\/\*|\*\/\*/i.test(accept)) {
    return { status: 406, code: -32000, message: 'Not Acceptable: the client must accept application/json' }
  }
  return undefined
}

/** Batches (2025-03-26) are bounded and never empty; the SDK checks their members. */
export function checkBatch (body: unknown): RpcProblem | undefined {
  if (!Array.isArray(body)) return undefined
  if (body.length === 0) return { status: 400, code: -32600, message: 'Invalid Request: empty batch' }
  if (body.length > MAX_BATCH) return { status: 400, code: -32600, message: `Invalid Request: a batch holds at most ${MAX_BATCH} messages` }
  return undefined
}

/** The SDK's own era classification and validation ladder (the same code createMcpHandler runs). */
export function classify (request: FastifyRequest): InboundClassificationOutcome {
  const headers = request.headers
  return classifyInboundRequest({
    httpMethod: request.method,
    protocolVersionHeader: single(headers['mcp-protocol-version']),
    mcpMethodHeader: single(headers['mcp-method']),
    mcpNameHeader: single(headers['mcp-name']),
    body: request.body
  })
}

function single (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** A single tools/call that /mcp's direct path may run without the SDK. */
export interface DirectToolCall {
  id: RequestId
  params: ToolCallParams
  /** A long-poll: only then does a vanished client matter. */
  waits: boolean
  modern: boolean
}

/**
 * The hot path's guard, before the SDK's classifier (which costs more than the rest of a
 * whoami): a plain single `tools/call` the classifier is known to route to an era without
 * objection. Legacy: no `_meta` at all and a 2025 version header or none (the classifier's
 * "no claim"). Modern: every header the revision requires agreeing with the body, and an
 * envelope the classifier already accepted (cached by its JSON text; validation depends on
 * nothing else). Anything else is classified first, and answered by the SDK when unusual.
 */
export function fastToolCall (request: FastifyRequest): DirectToolCall | undefined {
  const call = plainToolCall(request.body)
  if (call === undefined) return undefined
  if (call.meta === undefined) return legacyHeadersAllow(request) ? directCall(call, false) : undefined
  if (!modernHeadersAgree(request, call) || !acceptedEnvelopes.has(JSON.stringify(call.meta))) return undefined
  return directCall(call, true)
}

/** After the classifier routed a request: a single tools/call the direct path may run. */
export function directToolCall (request: FastifyRequest, route: InboundClassificationOutcome): DirectToolCall | undefined {
  if (route.kind === 'reject') return undefined
  const call = plainToolCall(request.body)
  if (call === undefined) return undefined
  if (route.kind === 'legacy') {
    const meta = call.meta
    return legacyHeadersAllow(request) && (meta === undefined || isPlainObject(meta)) ? directCall(call, false) : undefined
  }
  if (!modernHeadersAgree(request, call)) return undefined
  rememberEnvelope(JSON.stringify(call.meta))
  return directCall(call, true)
}

interface PlainToolCall { id: RequestId, name: string, args: Record<string, unknown> | undefined, meta: unknown }

const REQUEST_KEYS = new Set(['jsonrpc', 'id', 'method', 'params'])

/** A JSON-RPC request (as the SDK's strict schema has it) calling a tool by name with an arguments object. */
function plainToolCall (body: unknown): PlainToolCall | undefined {
  if (!isPlainObject(body)) return undefined
  const { jsonrpc, id, method, params } = body
  if (jsonrpc !== '2.0' || method !== 'tools/call' || (typeof id !== 'string' && !Number.isSafeInteger(id))) return undefined
  for (const key in body) if (!REQUEST_KEYS.has(key)) return undefined
  if (!isPlainObject(params)) return undefined
  const { name, arguments: args, _meta: meta } = params
  if (typeof name !== 'string' || (args !== undefined && !isPlainObject(args))) return undefined
  return { id: id as RequestId, name, args: args as Record<string, unknown> | undefined, meta }
}

function legacyHeadersAllow (request: FastifyRequest): boolean {
  const version = request.headers['mcp-protocol-version']
  return version === undefined || LEGACY_VERSIONS.has(version as string)
}

function modernHeadersAgree (request: FastifyRequest, call: PlainToolCall): boolean {
  const headers = request.headers
  return headers['mcp-protocol-version'] === MODERN_PROTOCOL_VERSION && headers['mcp-method'] === 'tools/call' &&
    headers['mcp-name'] === call.name && isPlainObject(call.meta) && call.meta[PROTOCOL_VERSION_META_KEY] === MODERN_PROTOCOL_VERSION
}

function directCall (call: PlainToolCall, modern: boolean): DirectToolCall {
  const wait = call.args?.wait_seconds
  return { id: call.id, params: { name: call.name, arguments: call.args }, waits: typeof wait === 'number' && wait > 0, modern }
}

const LEGACY_VERSIONS: ReadonlySet<string> = new Set(LEGACY_PROTOCOL_VERSIONS)

/** Envelopes (as JSON text) the SDK's classifier accepted; clients send the same one every time. */
const acceptedEnvelopes = new Set<string>()
const MAX_ACCEPTED_ENVELOPES = 1000

function rememberEnvelope (json: string): void {
  if (acceptedEnvelopes.size >= MAX_ACCEPTED_ENVELOPES) acceptedEnvelopes.clear()
  acceptedEnvelopes.add(json)
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/** A tools/call result as the era expects it: 2026-07-28 results say what they are and who answered. */
export function toolCallResponse (call: DirectToolCall, result: ToolCallResult): unknown {
  const body = call.modern ? { ...result, resultType: 'complete', _meta: { [SERVER_INFO_META_KEY]: SERVER_INFO } } : result
  return { jsonrpc: '2.0', id: call.id, result: body }
}

/**
 * The web Request the SDK reads headers from (the body travels parsed, beside it). Accept is
 * what the SDK requires, once our own check (checkMediaTypes) has accepted the client's.
 */
export function toWebRequest (request: FastifyRequest, url: string, signal: AbortSignal): Request {
  const headers = new Headers()
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined || name === 'content-length' || name === 'transfer-encoding' || name === 'connection') continue
    headers.set(name, Array.isArray(value) ? value.join(', ') : value)
  }
  headers.set('accept', 'application/json, text/event-stream')
  return new Request(url, { method: request.method, headers, signal })
}

/**
 * Sends the SDK's web Response through Fastify. A JSON answer holding a database-unavailable
 * error becomes 503 + Retry-After (decision 0008); an SSE answer is streamed as it comes.
 */
export async function sendWebResponse (reply: FastifyReply, response: Response): Promise<FastifyReply> {
  reply.code(response.status)
  response.headers.forEach((value, name) => { reply.header(name, value) })
  if (!reply.hasHeader('cache-control')) reply.header('Cache-Control', 'no-store')
  if (response.body === null) return await reply.send()
  if (response.headers.get('content-type')?.startsWith('text/event-stream') === true) {
    return await reply.send(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream))
  }
  const text = await response.text()
  if (text.includes(String(UNAVAILABLE_ERROR_CODE)) && holdsUnavailableError(text)) {
    reply.code(503).header('Retry-After', RETRY_AFTER_SECONDS)
  }
  return await reply.send(text)
}

function holdsUnavailableError (text: string): boolean {
  try {
    const parsed = JSON.parse(text) as unknown
    return (Array.isArray(parsed) ? parsed : [parsed]).some((m) => (m as { error?: { code?: unknown } } | null)?.error?.code === UNAVAILABLE_ERROR_CODE)
  } catch {
    return false
  }
}

export { RETRY_AFTER_SECONDS } from '../lib/errors.ts'

/**
 * tools/call params the SDK would refuse with its schema's raw issue list as the message: the
 * same -32602 (HTTP 200, the id echoed) with a sentence a model can act on. Modern requests
 * whose headers already disagree are left to the SDK (-32020 comes first on that ladder).
 */
export function invalidToolCallParams (request: FastifyRequest, route: InboundClassificationOutcome): RpcProblem | undefined {
  if (route.kind === 'reject') return undefined
  if (route.kind === 'modern' && (request.headers['mcp-protocol-version'] !== MODERN_PROTOCOL_VERSION || request.headers['mcp-method'] !== 'tools/call')) return undefined
  const message = request.body as { id?: unknown, method?: unknown, params?: unknown } | null
  if (message === null || typeof message !== 'object' || Array.isArray(message) || message.method !== 'tools/call') return undefined
  const params = (message.params ?? {}) as { name?: unknown, arguments?: unknown }
  const problems: string[] = []
  if (typeof params !== 'object' || Array.isArray(params)) problems.push(`"params": expected object, received ${typeName(params)}`)
  else {
    if (typeof params.name !== 'string') problems.push(`"name": expected string, received ${typeName(params.name)}`)
    const args = params.arguments
    if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args))) problems.push(`"arguments": expected record, received ${typeName(args)}`)
  }
  if (problems.length === 0) return undefined
  const id = typeof message.id === 'string' || typeof message.id === 'number' ? message.id : null
  return { status: 200, code: -32602, id, message: `Invalid params for tools/call: ${problems.join('; ')}` }
}

function typeName (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  return value === undefined ? 'undefined' : typeof value
}
