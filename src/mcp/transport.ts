import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js'
import {
  CallToolRequestSchema, ErrorCode, InitializeRequestSchema, ListToolsRequestSchema,
  type JSONRPCErrorResponse, type JSONRPCMessage, type JSONRPCRequest, type JSONRPCResultResponse, type MessageExtraInfo
} from '@modelcontextprotocol/sdk/types.js'

export type JSONRPCReply = JSONRPCResultResponse | JSONRPCErrorResponse

interface Pending { request: JSONRPCRequest, deliver: (reply: JSONRPCReply) => void }

/**
 * The SDK validates a request's params before its handler runs, and answers a failure as
 * -32603 Internal error with the raw validation issues as the message. Such replies are
 * rewritten here to -32602 Invalid params with a readable message. Only failed requests are
 * parsed again: the hot path is untouched.
 */
const REQUEST_SCHEMAS = new Map<string, typeof CallToolRequestSchema | typeof ListToolsRequestSchema | typeof InitializeRequestSchema>([
  ['tools/call', CallToolRequestSchema],
  ['tools/list', ListToolsRequestSchema],
  ['initialize', InitializeRequestSchema]
])

function invalidParams (request: JSONRPCRequest): string | undefined {
  const schema = REQUEST_SCHEMAS.get(request.method)
  const parsed = schema?.safeParse(request)
  if (parsed === undefined || parsed.success) return undefined
  const problems = parsed.error.issues.map((issue) => {
    const path = issue.path.filter((p) => p !== 'params').join('.')
    return `${path === '' ? 'params' : `"${path}"`}: ${issue.message}`
  })
  return `Invalid params for ${request.method}: ${problems.join('; ')}`
}

/**
 * Connects one long-lived SDK Server to many concurrent stateless HTTP requests.
 *
 * The SDK's own stateless pattern builds a Server and a transport per request; this transport
 * instead gives every incoming JSON-RPC request a process-unique id before handing it to the
 * server (so ids chosen by different clients never collide inside the SDK's Protocol), and
 * routes each response back to the HTTP request that is waiting for it, under its original id.
 *
 * Messages the server sends on its own (notifications, requests to the client) have no stream
 * to go to in stateless JSON mode and are dropped, as are notifications from clients: they
 * cannot be correlated across stateless requests (a client's `notifications/cancelled` naming
 * id 1 must not cancel another client's request 1).
 */
export class MultiplexTransport implements Transport {
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void
  onclose?: () => void
  onerror?: (error: Error) => void

  private nextId = 0
  private readonly pending = new Map<number, Pending>()

  async start (): Promise<void> {}

  async close (): Promise<void> {
    this.pending.clear()
    this.onclose?.()
  }

  async send (message: JSONRPCMessage): Promise<void> {
    if (!('id' in message) || typeof message.id !== 'number' || !('result' in message || 'error' in message)) return
    const waiting = this.pending.get(message.id)
    if (waiting === undefined) return
    this.pending.delete(message.id)
    if ('error' in message && message.error.code === ErrorCode.InternalError) {
      const problem = invalidParams(waiting.request)
      if (problem !== undefined) {
        waiting.deliver({ jsonrpc: '2.0', id: waiting.request.id, error: { code: ErrorCode.InvalidParams, message: problem } })
        return
      }
    }
    waiting.deliver({ ...message, id: waiting.request.id } as JSONRPCReply)
  }

  /** Requests in flight (for metrics and leak tests). */
  get inFlight (): number { return this.pending.size }

  /**
   * Hands one HTTP request's JSON-RPC requests to the server and resolves with their replies
   * in order. When `signal` aborts (the client went away), the handlers' own signals abort.
   */
  async dispatch (requests: readonly JSONRPCRequest[], extra: MessageExtraInfo, signal?: AbortSignal): Promise<JSONRPCReply[]> {
    const onmessage = this.onmessage
    if (onmessage === undefined) throw new Error('transport is not connected to a server')
    if (signal?.aborted === true) return []
    const ids: number[] = []
    const replies = Promise.all(requests.map(async (request) => await new Promise<JSONRPCReply>((resolve) => {
      const id = this.nextId = (this.nextId + 1) % Number.MAX_SAFE_INTEGER
      ids.push(id)
      this.pending.set(id, { request, deliver: resolve })
      onmessage({ ...request, id }, extra)
    })))
    if (signal === undefined) return await replies
    return await new Promise<JSONRPCReply[]>((resolve) => {
      const onAbort = (): void => {
        for (const id of ids) {
          if (!this.pending.delete(id)) continue
          // The SDK's Protocol aborts the handler's `extra.signal` on a cancellation.
          onmessage({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'client disconnected' } })
        }
        resolve([])
      }
      signal.addEventListener('abort', onAbort, { once: true })
      void replies.then((result) => {
        signal.removeEventListener('abort', onAbort)
        resolve(result)
      })
    })
  }
}
