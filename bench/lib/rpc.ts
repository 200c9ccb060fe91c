import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js'

/**
 * What every target is sent: the same JSON-RPC POST, headers included, so the only difference
 * between targets is the server answering it.
 */
export function rpcHeaders (token: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': LATEST_PROTOCOL_VERSION,
    authorization: `Bearer ${token}`
  }
}

export function toolCallBody (name: string, args: Record<string, unknown> = {}, id: number | string = 1): string {
  return JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } })
}

export interface ToolResult { isError: boolean, data: any, status: number }

/**
 * One tools/call over HTTP (fetch), for set-up, correctness checks and the wake-up probe.
 * Understands both JSON and single-event SSE replies (the SDK's transport answers with SSE).
 */
export async function callTool (url: string, token: string, name: string, args: Record<string, unknown> = {}, signal?: AbortSignal): Promise<ToolResult> {
  const response = await fetch(url, { method: 'POST', headers: rpcHeaders(token), body: toolCallBody(name, args), signal })
  const text = await response.text()
  const message = parseRpcReply(text)
  const result = message?.result as { content?: Array<{ text?: string }>, isError?: boolean, structuredContent?: unknown } | undefined
  if (response.status !== 200 || result === undefined) {
    return { isError: true, status: response.status, data: text.slice(0, 500) }
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

/** Body check used under load: a JSON-RPC result that is not a tool error. Cheap string tests only. */
export function isSuccessfulToolReply (body: string): boolean {
  return body.includes('"result"') && !body.includes('"isError":true')
}
