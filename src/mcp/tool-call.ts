import { z } from 'zod'
import type { AuditLog } from '../audit/audit-log.ts'
import { SCOPES, type Scope } from '../auth/scopes.ts'
import { authLabel, type AuthContext } from '../auth/types.ts'
import type { Bus } from '../bus/bus.ts'
import { BusInputError } from '../bus/limits.ts'
import { isDatabaseUnavailable } from '../db/errors.ts'
import type { FastifyBaseLogger } from 'fastify'
import { describeInputError, TOOLS_BY_NAME, type ToolDefinition } from './tools.ts'

/** JSON-RPC error code the route lifts to HTTP 503 + Retry-After (decision 0008). */
export const UNAVAILABLE_ERROR_CODE = -32050
const INVALID_PARAMS = -32602
const INTERNAL_ERROR = -32603

export interface ToolCallResult {
  content: Array<{ type: 'text', text: string }>
  structuredContent?: Record<string, unknown>
  isError?: boolean
}

export interface ToolCallParams { name: string, arguments?: Record<string, unknown> | undefined }

/** Runs one tools/call: scope guard, argument validation, the tool, the audit row. */
export type ToolCaller = (params: ToolCallParams, auth: AuthContext | undefined, signal: AbortSignal | undefined) => Promise<ToolCallResult>

export interface ToolCallerDeps { bus: Bus, audit: AuditLog, log: FastifyBaseLogger }

/**
 * The one tools/call handler. /mcp's direct path runs it for a single tools/call (the hot path,
 * either era), and the SDK servers built per request register it for everything else: one
 * behaviour, whichever entrance. Errors it throws carry a JSON-RPC `code`.
 */
export function createToolCaller ({ bus, audit, log }: ToolCallerDeps): ToolCaller {
  return async (params, auth, signal) => {
    const tool = TOOLS_BY_NAME.get(params.name)
    if (tool === undefined) {
      throw rpcError(INVALID_PARAMS, `Unknown tool: "${params.name}". Call tools/list for the tools of this server.`)
    }
    if (auth === undefined) throw rpcError(-32600, 'Not authenticated')
    const started = performance.now()
    const finish = (outcome: 'ok' | 'error' | 'denied', detail?: string): void => {
      audit.record({
        kind: 'tool',
        action: tool.name,
        outcome,
        principalId: auth.principalId,
        principalName: auth.principalName,
        authKind: authLabel(auth),
        clientId: auth.clientId,
        durationMs: Math.round(performance.now() - started),
        detail: detail ?? null
      })
    }

    // The HTTP layer already answered 403 for a missing scope; this guards any other path in.
    if (tool.scope !== null && !auth.scopes.includes(tool.scope)) {
      finish('denied', 'insufficient_scope')
      return toolError(`This token lacks the "${tool.scope}" scope needed by ${tool.name}.`)
    }
    // reportInput: without it every issue lacks `input`, and a wrong type reads as "is required".
    const parsed = tool.input.safeParse(params.arguments ?? {}, { reportInput: true })
    if (!parsed.success) {
      finish('error', 'invalid_arguments')
      return toolError(describeInputError(parsed.error, tool))
    }
    try {
      const result = await tool.run({ auth, bus, signal }, parsed.data)
      finish('ok')
      return {
        content: [{ type: 'text', text: JSON.stringify(result) }],
        structuredContent: result as Record<string, unknown>
      }
    } catch (err) {
      if (err instanceof BusInputError) {
        finish('error', 'invalid_input')
        return toolError(err.message)
      }
      if (isDatabaseUnavailable(err)) {
        finish('error', 'unavailable')
        throw rpcError(UNAVAILABLE_ERROR_CODE, 'The bus database is unavailable; try again shortly')
      }
      finish('error', 'internal_error')
      log.error({ err, tool: tool.name }, 'tool failed')
      throw rpcError(INTERNAL_ERROR, 'Internal error')
    }
  }
}

/**
 * The tools/list answer for each set of scopes a token can hold (every subset of SCOPES, so
 * four lists), computed once per process: a tool whose scope the token lacks stays listed (an
 * OAuth client steps up when the call is refused with 403) and its description says it will be
 * refused. `listFor` picks one by the token's scopes; nothing is built per request.
 */
export class ToolListings {
  private readonly lists = new Map<string, Array<Record<string, unknown> & { name: string }>>()

  constructor (tools: readonly ToolDefinition[]) {
    const schemas = new Map(tools.map((tool) => [tool, inputSchemaOf(tool)]))
    for (let mask = 0; mask < 1 << SCOPES.length; mask++) {
      const granted = SCOPES.filter((_, i) => (mask & (1 << i)) !== 0)
      this.lists.set(granted.join(' '), tools.map((tool) => toolListing(tool, granted, schemas.get(tool) ?? {})))
    }
  }

  /** The listing for a token holding these scopes (in any order). */
  listFor (scopes: readonly string[]): Array<Record<string, unknown> & { name: string }> {
    return this.lists.get(SCOPES.filter((s) => scopes.includes(s)).join(' ')) ?? []
  }
}

/** What `tools/list` says of a tool to a token holding `granted`. */
function toolListing (tool: ToolDefinition, granted: readonly Scope[], inputSchema: Record<string, unknown>): Record<string, unknown> & { name: string } {
  let description = tool.description
  if (tool.scope !== null) {
    description += ` Requires the ${tool.scope} scope.`
    if (!granted.includes(tool.scope)) {
      description += ` Your token lacks ${tool.scope}: this call will be refused; re-authorize with that scope (or use an API token that has it).`
    }
  }
  return {
    name: tool.name,
    title: tool.title,
    description,
    inputSchema,
    annotations: { title: tool.title, readOnlyHint: tool.readOnly, destructiveHint: false, idempotentHint: tool.readOnly || tool.idempotent === true, openWorldHint: false }
  }
}

/**
 * A tool's input as JSON Schema (draft 2020-12, what z.toJSONSchema emits, without `$schema`).
 * zod writes a nullable argument as `anyOf: [T, {"type": "null"}]`, or, for a type without
 * constraints, as a type array `["string", "null"]`. Both are valid 2020-12, but Gemini's
 * function declarations and some strict gateways refuse type arrays while accepting anyOf, so
 * every type array becomes anyOf.
 */
function inputSchemaOf (tool: ToolDefinition): Record<string, unknown> {
  const { $schema: _ignored, ...schema } = z.toJSONSchema(tool.input, { io: 'input' }) as Record<string, unknown>
  return withoutTypeArrays(schema) as Record<string, unknown>
}

function withoutTypeArrays (node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutTypeArrays)
  if (node === null || typeof node !== 'object') return node
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(node)) out[key] = withoutTypeArrays(value)
  const { type } = out
  if (!Array.isArray(type)) return out
  const { type: _type, description, ...rest } = out
  const branches = (type as string[]).map((t) => t === 'null' ? { type: 'null' } : { type: t, ...rest })
  return branches.length === 1 ? { ...(description === undefined ? {} : { description }), ...branches[0] } : { ...(description === undefined ? {} : { description }), anyOf: branches }
}

function toolError (message: string): ToolCallResult {
  return { content: [{ type: 'text', text: message }], isError: true }
}

/**
 * An error with a JSON-RPC code, for the direct path and the SDK's Protocol alike (both read
 * `code` and `message`; the SDK's ProtocolError would prefix the message with "MCP error").
 */
export function rpcError (code: number, message: string): Error & { code: number } {
  return Object.assign(new Error(message), { code })
}

/** The JSON-RPC code of an error thrown by the tool caller, or -32603 for anything else. */
export function rpcCodeOf (err: unknown): number {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'number' && Number.isInteger(code) ? code : INTERNAL_ERROR
}
