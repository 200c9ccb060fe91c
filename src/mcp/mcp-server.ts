import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import {
  CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, type CallToolResult, type Tool
} from '@modelcontextprotocol/sdk/types.js'
import type { FastifyBaseLogger } from 'fastify'
import { z } from 'zod'
import type { AuditLog } from '../audit/audit-log.ts'
import type { AuthContext } from '../auth/types.ts'
import type { Bus } from '../bus/bus.ts'
import { BusInputError } from '../bus/limits.ts'
import { isDatabaseUnavailable } from '../db/errors.ts'
import { describeInputError, TOOLS, TOOLS_BY_NAME, type ToolDefinition } from './tools.ts'

export const SERVER_INFO = { name: 'bus-mcp-server', title: 'Bus MCP Server', version: '0.1.0' }

/** JSON-RPC error code the transport lifts to HTTP 503 + Retry-After. */
export const UNAVAILABLE_ERROR_CODE = -32050

export interface McpServerDeps { bus: Bus, audit: AuditLog, log: FastifyBaseLogger }

/**
 * The one SDK `Server` of this process. It is built once, with tool definitions and their JSON
 * Schemas computed once, and serves every request through the multiplexing transport: nothing
 * is rebuilt per request.
 */
export function createMcpServer ({ bus, audit, log }: McpServerDeps): Server {
  const server = new Server(SERVER_INFO, {
    capabilities: { tools: { listChanged: false } },
    instructions: 'A message bus shared by agents. Use bus_send to post to a channel or message a principal, ' +
      'bus_read (optionally with wait_seconds) to receive, and bus_ack to mark messages handled.'
  })

  const toolList: Tool[] = TOOLS.map(toolListing)
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: toolList }))

  const callTool = createToolCaller({ bus, audit, log })
  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> =>
    await callTool(request.params, extra.authInfo?.extra?.context as AuthContext | undefined, extra.signal))

  return server
}

/** Runs one tools/call: scope guard, argument validation, the tool, the audit row. */
export type ToolCaller = (params: { name: string, arguments?: Record<string, unknown> | undefined }, auth: AuthContext | undefined, signal: AbortSignal | undefined) => Promise<CallToolResult>

/**
 * The tools/call handler. The SDK server uses it, and so does /mcp's direct path for a single
 * tools/call (the hot path), which skips the Protocol's per-request bookkeeping but runs this
 * same function: one behaviour, two entrances.
 */
export function createToolCaller ({ bus, audit, log }: McpServerDeps): ToolCaller {
  return async (params, auth, signal) => {
    const tool = TOOLS_BY_NAME.get(params.name)
    if (tool === undefined) {
      throw rpcError(ErrorCode.InvalidParams, `Unknown tool: "${params.name}". Call tools/list for the tools of this server.`)
    }
    if (auth === undefined) throw rpcError(ErrorCode.InvalidRequest, 'Not authenticated')
    const started = performance.now()
    const finish = (outcome: 'ok' | 'error' | 'denied', detail?: string): void => {
      audit.record({
        kind: 'tool',
        action: tool.name,
        outcome,
        principalId: auth.principalId,
        principalName: auth.principalName,
        authKind: auth.kind,
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
      return toolError(describeInputError(parsed.error))
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
      throw rpcError(ErrorCode.InternalError, 'Internal error')
    }
  }
}

function toolError (message: string): CallToolResult {
  return { content: [{ type: 'text', text: message }], isError: true }
}

function toolListing (tool: ToolDefinition): Tool {
  const { $schema: _ignored, ...inputSchema } = z.toJSONSchema(tool.input, { io: 'input' }) as Record<string, unknown>
  return {
    name: tool.name,
    title: tool.title,
    description: tool.description + (tool.scope === null ? '' : ` Requires the ${tool.scope} scope.`),
    inputSchema: inputSchema as Tool['inputSchema'],
    annotations: { title: tool.title, readOnlyHint: tool.readOnly, destructiveHint: false, idempotentHint: tool.readOnly, openWorldHint: false }
  }
}

/**
 * A JSON-RPC error for the SDK's Protocol to send: it reads `code` and `message`. (McpError
 * would prefix the message with "MCP error <code>:", which clients then prefix again.)
 */
function rpcError (code: number, message: string): Error {
  return Object.assign(new Error(message), { code })
}
