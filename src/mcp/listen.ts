import { PassThrough } from 'node:stream'
import { SERVER_INFO_META_KEY, specTypeSchemas, SUBSCRIPTION_ID_META_KEY } from '@modelcontextprotocol/server'
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import { credentialKey, type Authenticator } from '../auth/authenticator.ts'
import type { AuthContext } from '../auth/types.ts'
import type { BusEvent, BusEvents } from '../bus/events.ts'
import { canRead, parseResourceUri, readScopeMissing, resourceUri, topicOf } from './resources.ts'
import { SERVER_INFO } from './sdk-server.ts'

type RequestId = string | number

/** `_meta` key of the id of the message that updated a resource (our own, beside the revision's keys). */
export const MESSAGE_ID_META_KEY = 'bus-mcp/messageId'

export interface ListenHubOptions {
  /** Streams this replica holds at most (MAX_LISTEN_STREAMS). */
  maxStreams: number
  /** SSE comment frames this often keep proxies from cutting an idle stream. */
  keepAliveMs?: number
  /** Bytes a stream may have waiting for a client that does not read, before it is closed. */
  maxBufferedBytes?: number
  /** How often every stream's credential is checked again even without an auth change heard. */
  recheckMs?: number
  /** How long a stream closed for not reading may take to flush before its connection is cut. */
  closeGraceMs?: number
}

/** What a `subscriptions/listen` request gets instead of a stream: an in-band JSON-RPC error. */
export interface ListenRefusal { code: number, message: string, data?: unknown }

const RESOURCE_LIMIT = 100

/**
 * `subscriptions/listen` (2026-07-28) for the bus's resources: an SSE stream that opens with
 * `notifications/subscriptions/acknowledged` and then carries `notifications/resources/updated`
 * for every message sent to a subscribed channel or to the caller's own inbox, on any replica
 * (the events arrive through PostgreSQL LISTEN/NOTIFY: src/bus/events.ts), and
 * `notifications/resources/list_changed` when a channel is created, if asked for.
 *
 * Ours rather than the SDK's listen router, which filters by URI alone (every principal's inbox
 * is `bus://inbox`), subscribes to URIs it was never asked to authorise, buffers without bound
 * for a client that does not read, and outlives the token that opened it
 * (docs/decisions/0027-live-bus.md). The wire format is the same: ack first, the subscription id
 * in every notification's `_meta`, the empty result as the graceful end.
 */
export class ListenHub {
  private readonly streams = new Set<ListenStream>()
  /** Streams by the event topic they subscribed to. */
  private readonly byTopic = new Map<string, Set<ListenStream>>()
  private readonly off: Array<() => void> = []
  private keepAliveTimer: NodeJS.Timeout | undefined
  private recheckTimer: NodeJS.Timeout | undefined
  private recheckPending: NodeJS.Timeout | undefined
  private closed = false
  private readonly options: Required<ListenHubOptions>
  private readonly events: BusEvents
  private readonly authenticator: Authenticator
  private readonly log: FastifyBaseLogger

  constructor (events: BusEvents, authenticator: Authenticator, log: FastifyBaseLogger, options: ListenHubOptions) {
    this.events = events
    this.authenticator = authenticator
    this.log = log
    this.options = { keepAliveMs: 15_000, maxBufferedBytes: 256 * 1024, recheckMs: 30_000, closeGraceMs: 5_000, ...options }
  }

  /** Open streams on this replica (for metrics and tests). */
  get size (): number { return this.streams.size }

  start (): void {
    this.off.push(
      this.events.subscribe((event) => { this.deliver(event) }),
      // Events may have been lost while the listening connection was down: every subscribed
      // resource may have changed, so each stream hears so once (without a message id).
      this.events.onResync(() => { for (const stream of this.streams) stream.resync() }),
      this.authenticator.onInvalidate(() => { this.scheduleRecheck(50) })
    )
    this.keepAliveTimer = setInterval(() => { for (const stream of this.streams) stream.keepAlive() }, this.options.keepAliveMs)
    this.keepAliveTimer.unref()
    this.recheckTimer = setInterval(() => { this.scheduleRecheck(0) }, this.options.recheckMs)
    this.recheckTimer.unref()
  }

  /** Ends every stream gracefully (shutdown): clients see the empty result and may listen again elsewhere. */
  close (): void {
    this.closed = true
    for (const off of this.off.splice(0)) off()
    clearInterval(this.keepAliveTimer)
    clearInterval(this.recheckTimer)
    clearTimeout(this.recheckPending)
    for (const stream of [...this.streams]) stream.end()
  }

  /**
   * Answers one `subscriptions/listen` request (already authenticated and classified as the
   * 2026-07-28 revision): the stream, or an in-band error and no stream.
   */
  async open (body: unknown, auth: AuthContext, reply: FastifyReply): Promise<FastifyReply> {
    const id = (body as { id: RequestId }).id
    const accepted = this.accept(body, auth)
    if ('code' in accepted) {
      return await reply.code(200).header('Cache-Control', 'no-store').send({ jsonrpc: '2.0', id, error: accepted })
    }
    const output = new PassThrough()
    const stream = new ListenStream(this, id, auth, accepted, output, reply)
    this.streams.add(stream)
    for (const topic of stream.topics()) {
      let set = this.byTopic.get(topic)
      if (set === undefined) this.byTopic.set(topic, set = new Set())
      set.add(stream)
    }
    reply.raw.on('close', () => { stream.end(false) })
    stream.acknowledge()
    if (auth.expiresAt !== null) stream.endAt(auth.expiresAt)
    return await reply.code(200).headers({
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no'
    }).send(output)
  }

  /** Validates the filter and authorises every resource in it; what the stream will honour. */
  private accept (body: unknown, auth: AuthContext): Filter | ListenRefusal {
    if (this.closed) return { code: -32603, message: 'The server is shutting down; listen again (another replica will serve you)' }
    const parsed = specTypeSchemas.SubscriptionsListenRequest['~standard'].validate(body)
    if ('then' in parsed || parsed.issues !== undefined) {
      const issues = 'then' in parsed ? [] : parsed.issues
      return { code: -32602, message: `Invalid params: 'notifications' is required and must be a valid SubscriptionFilter${issues.length > 0 ? ` (${issues.map((i) => `${(i.path ?? []).map(String).join('.')}: ${i.message}`).join('; ')})` : ''}` }
    }
    const requested = (parsed.value as { params: { notifications: { resourceSubscriptions?: string[], resourcesListChanged?: boolean } } }).params.notifications
    const uris = [...new Set(requested.resourceSubscriptions ?? [])]
    if (uris.length > RESOURCE_LIMIT) return { code: -32602, message: `Invalid params: at most ${RESOURCE_LIMIT} resources per subscription (got ${uris.length})` }
    const subscriptions: Array<{ uri: string, topic: string }> = []
    for (const uri of uris) {
      const resource = parseResourceUri(uri)
      if (resource === undefined) return { code: -32602, message: `Resource not found: ${uri} (this server's resources are bus://inbox and bus://channels/NAME)`, data: { uri } }
      if (!canRead(auth)) {
        const refusal = readScopeMissing(uri)
        return { code: refusal.code, message: refusal.message, data: refusal.data }
      }
      subscriptions.push({ uri: resourceUri(resource), topic: topicOf(resource, auth) })
    }
    if (this.streams.size >= this.options.maxStreams) {
      this.log.warn({ streams: this.streams.size }, 'subscriptions/listen refused: MAX_LISTEN_STREAMS reached')
      return { code: -32603, message: `Subscription limit reached: this server holds its maximum of ${this.options.maxStreams} listen streams (MAX_LISTEN_STREAMS); listen again shortly` }
    }
    return { subscriptions, listChanged: requested.resourcesListChanged === true && canRead(auth) }
  }

  private deliver (event: BusEvent): void {
    if (event.kind === 'resources_list_changed') {
      for (const stream of this.streams) stream.listChanged()
    } else if (event.kind === 'resource_updated') {
      const streams = this.byTopic.get(event.uri)
      if (streams !== undefined) for (const stream of streams) stream.updated(event.uri, event.messageId)
    }
  }

  /** Called by a stream as it ends. */
  forget (stream: ListenStream): void {
    this.streams.delete(stream)
    for (const topic of stream.topics()) {
      const set = this.byTopic.get(topic)
      if (set?.delete(stream) === true && set.size === 0) this.byTopic.delete(topic)
    }
  }

  get bufferLimit (): number { return this.options.maxBufferedBytes }
  get closeGraceMs (): number { return this.options.closeGraceMs }
  get logger (): FastifyBaseLogger { return this.log }

  /** Checks every stream's credential soon (coalescing a burst of auth changes into one query). */
  private scheduleRecheck (delayMs: number): void {
    if (this.recheckPending !== undefined || this.streams.size === 0) return
    this.recheckPending = setTimeout(() => {
      this.recheckPending = undefined
      this.recheck().catch((err: unknown) => { this.log.warn({ err }, 'could not re-check the credentials of listen streams') })
    }, delayMs)
    this.recheckPending.unref()
  }

  /** Ends (gracefully) every stream whose token was revoked, whose principal was disabled, or that lost bus:read. */
  private async recheck (): Promise<void> {
    const streams = [...this.streams]
    if (streams.length === 0) return
    const live = await this.authenticator.liveCredentials(streams.map((s) => s.auth))
    for (const stream of streams) {
      const scopes = live.get(credentialKey(stream.auth))
      if (scopes === undefined || (stream.readsResources && !scopes.includes('bus:read'))) stream.end()
    }
  }
}

interface Filter { subscriptions: Array<{ uri: string, topic: string }>, listChanged: boolean }

/** One open `subscriptions/listen` stream. */
class ListenStream {
  readonly auth: AuthContext
  private readonly hub: ListenHub
  private readonly id: RequestId
  private readonly filter: Filter
  private readonly output: PassThrough
  private readonly reply: FastifyReply
  /** Subscription id as it appears in `_meta` (JSON text), computed once. */
  private readonly idJson: string
  private readonly uriByTopic: Map<string, string>
  private expiry: NodeJS.Timeout | undefined
  private ended = false

  constructor (hub: ListenHub, id: RequestId, auth: AuthContext, filter: Filter, output: PassThrough, reply: FastifyReply) {
    this.hub = hub
    this.id = id
    this.auth = auth
    this.filter = filter
    this.output = output
    this.reply = reply
    this.idJson = JSON.stringify(id)
    this.uriByTopic = new Map(filter.subscriptions.map((s) => [s.topic, s.uri]))
  }

  get readsResources (): boolean { return this.filter.subscriptions.length > 0 || this.filter.listChanged }

  topics (): string[] { return [...this.uriByTopic.keys()] }

  acknowledge (): void {
    const honored: Record<string, unknown> = {}
    if (this.filter.subscriptions.length > 0) honored.resourceSubscriptions = this.filter.subscriptions.map((s) => s.uri)
    if (this.filter.listChanged) honored.resourcesListChanged = true
    this.write('notifications/subscriptions/acknowledged', `{"notifications":${JSON.stringify(honored)},"_meta":{"${SUBSCRIPTION_ID_META_KEY}":${this.idJson}}}`)
    // Nothing this server can deliver was asked for: the stream has nothing to wait for.
    if (!this.readsResources) this.end()
  }

  updated (topic: string, messageId: number | undefined): void {
    const uri = this.uriByTopic.get(topic)
    if (uri === undefined) return
    const messageMeta = messageId === undefined || messageId === 0 ? '' : `"${MESSAGE_ID_META_KEY}":${messageId},`
    this.write('notifications/resources/updated', `{"uri":${JSON.stringify(uri)},"_meta":{${messageMeta}"${SUBSCRIPTION_ID_META_KEY}":${this.idJson}}}`)
  }

  listChanged (): void {
    if (this.filter.listChanged) this.write('notifications/resources/list_changed', `{"_meta":{"${SUBSCRIPTION_ID_META_KEY}":${this.idJson}}}`)
  }

  resync (): void {
    for (const topic of this.uriByTopic.keys()) this.updated(topic, undefined)
    this.listChanged()
  }

  keepAlive (): void {
    this.push(': keepalive\n\n')
  }

  endAt (when: Date): void {
    // setTimeout holds at most 2^31-1 ms; a token valid longer is re-checked periodically anyway.
    const ms = Math.min(Math.max(when.getTime() - Date.now(), 0), 2 ** 31 - 1)
    this.expiry = setTimeout(() => { this.end() }, ms)
    this.expiry.unref()
  }

  /**
   * Ends the stream: gracefully (the empty `subscriptions/listen` result, then the end of the
   * response) unless the client is already gone.
   */
  end (graceful = true): void {
    if (!this.stop()) return
    if (graceful) {
      this.output.end(frame(`{"jsonrpc":"2.0","id":${this.idJson},"result":{"resultType":"complete","_meta":{"${SUBSCRIPTION_ID_META_KEY}":${this.idJson},"${SERVER_INFO_META_KEY}":${JSON.stringify(SERVER_INFO)}}}}`))
    } else {
      this.output.destroy()
    }
  }

  /** Stops delivery to this stream (once): false if it had stopped already. */
  private stop (): boolean {
    if (this.ended) return false
    this.ended = true
    clearTimeout(this.expiry)
    this.hub.forget(this)
    return true
  }

  private write (method: string, params: string): void {
    this.push(frame(`{"jsonrpc":"2.0","method":"${method}","params":${params}}`))
  }

  /**
   * Queues a frame, unless the client has stopped reading: past the buffer bound the stream is
   * closed with a reason (a JSON-RPC error answering the listen request), and the connection is
   * cut if even that cannot be flushed in time. Memory per stream stays bounded either way.
   */
  private push (text: string): void {
    if (this.ended) return
    this.output.write(text)
    if (this.output.writableLength + this.output.readableLength <= this.hub.bufferLimit) return
    this.stop()
    this.hub.logger.warn({ principal: this.auth.principalName, buffered: this.output.writableLength + this.output.readableLength }, 'listen stream closed: the client is not reading its notifications')
    this.output.end(frame(`{"jsonrpc":"2.0","id":${this.idJson},"error":{"code":-32000,"message":"Subscription closed: more than ${this.hub.bufferLimit} bytes of notifications were waiting for this client to read them. Listen again, and re-read your resources from your cursor."}}`))
    const cut = setTimeout(() => {
      // The response may count as finished while its bytes still wait in the socket's buffer.
      const socket = this.reply.raw.socket
      if (!this.reply.raw.writableFinished || (socket !== null && socket.writableLength > 0)) {
        this.reply.raw.destroy()
        socket?.destroy()
      }
    }, this.hub.closeGraceMs)
    cut.unref()
  }
}

function frame (json: string): string {
  return `event: message\ndata: ${json}\n\n`
}
