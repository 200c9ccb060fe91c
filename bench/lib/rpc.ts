import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js'

/**
 * The MCP protocol era a request is sent in:
 * - `legacy`: the 2025 revisions (MCP-Protocol-Version 2025-11-25, the v1 SDK's latest), a plain
 *   JSON-RPC `tools/call` as a stateless client sends it after its handshake;
 * - `modern`: 2026-07-28, a self-contained request (no handshake): `Mcp-Method` / `Mcp-Name`
 *   headers and the `io.modelcontextprotocol/*` envelope in `params._meta`.
 */
export type Era = 'legacy' | 'modern'

export const ERAS: readonly Era[] = ['legacy', 'modern']

export const MODERN_PROTOCOL_VERSION = '2026-07-28'

export const ERA_LABEL: Record<Era, string> = {
  legacy: `legacy era (MCP-Protocol-Version ${LATEST_PROTOCOL_VERSION})`,
  modern: `modern era (MCP-Protocol-Version ${MODERN_PROTOCOL_VERSION})`
}

const CLIENT_INFO = { name: 'bench', version: '1.0.0' }

/**
 * What every target is sent: the same JSON-RPC POST, headers included, so the only difference
 * between targets of one era is the server answering it. In the modern era the headers name the
 * method and the tool (`tool`), which therefore must match the body's.
 */
export function rpcHeaders (token: string, era: Era = 'legacy', tool = 'whoami'): Record<string, string> {
  const common = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${token}`
  }
  if (era === 'legacy') return { ...common, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION }
  return { ...common, 'mcp-protocol-version': MODERN_PROTOCOL_VERSION, 'mcp-method': 'tools/call', 'mcp-name': tool }
}

export function toolCallBody (name: string, args: Record<string, unknown> = {}, id: number | string = 1, era: Era = 'legacy'): string {
  const params = era === 'legacy'
    ? { name, arguments: args }
    : {
        name,
        arguments: args,
        _meta: {
          'io.modelcontextprotocol/protocolVersion': MODERN_PROTOCOL_VERSION,
          'io.modelcontextprotocol/clientCapabilities': {},
          'io.modelcontextprotocol/clientInfo': CLIENT_INFO
        }
      }
  return JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params })
}

export interface ToolResult { isError: boolean, data: any, status: number }

/**
 * One tools/call over HTTP (fetch), for set-up, correctness checks and the wake-up probe.
 * Understands both JSON and single-event SSE replies (the SDK's transport answers with SSE).
 * Anything but HTTP 200 with a JSON-RPC result is an error; in the modern era the result must
 * also say `resultType: "complete"` (a server that ignored the envelope and answered as in 2025
 * is not serving the modern era).
 */
export async function callTool (url: string, token: string, name: string, args: Record<string, unknown> = {}, signal?: AbortSignal, era: Era = 'legacy'): Promise<ToolResult> {
  const response = await fetch(url, { method: 'POST', headers: rpcHeaders(token, era, name), body: toolCallBody(name, args, 1, era), signal })
  const text = await response.text()
  const message = parseRpcReply(text)
  const result = message?.result as { content?: Array<{ text?: string }>, isError?: boolean, structuredContent?: unknown, resultType?: string } | undefined
  if (response.status !== 200 || result === undefined) {
    return { isError: true, status: response.status, data: `HTTP ${response.status}: ${text.slice(0, 500)}` }
  }
  if (era === 'modern' && result.resultType !== 'complete') {
    return { isError: true, status: response.status, data: `no resultType "complete" in a modern-era reply: ${text.slice(0, 500)}` }
  }
  const first = result.content?.[0]?.text ?? ''
  let data: unknown = result.structuredContent
  if (data === undefined) { try { data = JSON.parse(first) } catch { data = first } }
  return { isError: result.isError === true, status: response.status, data }
}

export function parseRpcReply (text: string): { result?: unknown, error?: unknown } | undefined {
  const trimmed = text.trimStart()
  const json = trimmed.startsWith('{')
    ? trimmed
    : trimmed.split('\n').find((line) => line.startsWith('data:'))?.slice(5).trim()
  if (json === undefined) return undefined
  try { return JSON.parse(json) } catch { return undefined }
}

/**
 * Body check used under load: a JSON-RPC result that is not a tool error (a JSON-RPC error
 * reply has no "result" and fails); in the modern era also `resultType: "complete"`. Cheap
 * string tests only.
 */
export function isSuccessfulToolReply (body: string, era: Era = 'legacy'): boolean {
  return body.includes('"result"') && !body.includes('"isError":true') &&
    (era === 'legacy' || body.includes('"resultType":"complete"'))
}
