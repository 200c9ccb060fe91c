import { Readable } from 'node:stream'
import { classifyInboundRequest, type InboundClassificationOutcome } from '@modelcontextprotocol/server'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { LEGACY_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSION, SERVER_INFO } from './sdk-server.ts'
import { UNAVAILABLE_ERROR_CODE, type ToolCallParams, type ToolCallResult } from './tool-call.ts'

/** Bodies are bounded: a full 64 KiB message JSON-escaped, batches, and headroom. */
export const MCP_BODY_LIMIT = 512 * 1024
const MAX_BATCH = 100
const PROTOCOL_VERSION_META_KEY = 'io.modelcontextprotocol/protocolVersion'
const SERVER_INFO_META_KEY = 'io.modelcontextprotocol/serverInfo'
const RETRY_AFTER_SECONDS = '5'

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

/** Batches are bounded and never empty; every item must at least be an object. */
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
 * The hot path's guard. A plain, well-formed single `tools/call` is run directly; anything
 * unusual goes to the SDK, which owns every error answer of both eras. For the modern era the
 * guard also requires every header the revision requires to agree with the body, so the SDK
 * answers each mismatch (-32020, -32022) itself.
 */
export function directToolCall (request: FastifyRequest, route: InboundClassificationOutcome): DirectToolCall | undefined {
  if (route.kind === 'reject') return undefined
  const message = route.kind === 'modern' ? route.message : request.body
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return undefined
  const { jsonrpc, id, method, params } = message as { jsonrpc?: unknown, id?: unknown, method?: unknown, params?: unknown }
  if (jsonrpc !== '2.0' || method !== 'tools/call' || (typeof id !== 'string' && typeof id !== 'number')) return undefined
  if (params === null || typeof params !== 'object') return undefined
  const { name, arguments: args, _meta: meta } = params as { name?: unknown, arguments?: unknown, _meta?: unknown }
  if (typeof name !== 'string') return undefined
  if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args))) return undefined
  const modern = route.kind === 'modern'
  if (modern) {
    const headers = request.headers
    if (headers['mcp-protocol-version'] !== MODERN_PROTOCOL_VERSION || headers['mcp-method'] !== 'tools/call' || headers['mcp-name'] !== name) return undefined
    if ((meta as Record<string, unknown>)[PROTOCOL_VERSION_META_KEY] !== MODERN_PROTOCOL_VERSION) return undefined
  } else {
    const version = request.headers['mcp-protocol-version']
    if (version !== undefined && !LEGACY_PROTOCOL_VERSIONS.includes(version as string)) return undefined
    if (meta !== undefined && (meta === null || typeof meta !== 'object')) return undefined
  }
  const wait = (args as { wait_seconds?: unknown } | undefined)?.wait_seconds
  return { id, params: { name, arguments: args as Record<string, unknown> | undefined }, waits: typeof wait === 'number' && wait > 0, modern }
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

export { RETRY_AFTER_SECONDS }

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
