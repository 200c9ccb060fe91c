import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js'
import type {
  JSONRPCErrorResponse, JSONRPCMessage, JSONRPCRequest, JSONRPCResultResponse, MessageExtraInfo, RequestId
} from '@modelcontextprotocol/sdk/types.js'

export type JSONRPCReply = JSONRPCResultResponse | JSONRPCErrorResponse

interface Pending { originalId: RequestId, deliver: (reply: JSONRPCReply) => void }

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
    waiting.deliver({ ...message, id: waiting.originalId } as JSONRPCReply)
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
      this.pending.set(id, { originalId: request.id, deliver: resolve })
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
