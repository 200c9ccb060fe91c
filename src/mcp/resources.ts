import { ProtocolError, ResourceNotFoundError, type Resource, type ResourceTemplateType } from '@modelcontextprotocol/server'
import type { AuthContext } from '../auth/types.ts'
import type { Bus } from '../bus/bus.ts'
import { channelTopic, inboxTopic } from '../bus/events.ts'
import { BusInputError, CHANNEL_NAME_PATTERN, MAX_READ_LIMIT } from '../bus/limits.ts'

/** Channels and the caller's inbox as MCP resources (DESIGN.md, "Channels as resources"). */
export const INBOX_URI = 'bus://inbox'
const CHANNEL_URI_PREFIX = 'bus://channels/'
export const CHANNEL_URI_TEMPLATE = 'bus://channels/{name}{?after,limit}'
const MIME_TYPE = 'application/json'
const READ_SCOPE = 'bus:read'

/** How many of a stream's latest messages `resources/read` shows without `after`. */
export const LATEST_MESSAGES = 20
/** Channels per `resources/list` page. */
const PAGE_SIZE = 100

export type BusResource = { kind: 'inbox' } | { kind: 'channel', name: string }

/**
 * A resource URI this server serves: `bus://inbox` or `bus://channels/NAME`, exactly (no
 * percent-encoding, no fragment). Anything else is undefined: an unknown resource.
 */
export function parseResourceUri (uri: string): BusResource | undefined {
  if (uri === INBOX_URI) return { kind: 'inbox' }
  if (!uri.startsWith(CHANNEL_URI_PREFIX)) return undefined
  const name = uri.slice(CHANNEL_URI_PREFIX.length)
  return CHANNEL_NAME_PATTERN.test(name) ? { kind: 'channel', name } : undefined
}

export function resourceUri (resource: BusResource): string {
  return resource.kind === 'inbox' ? INBOX_URI : `${CHANNEL_URI_PREFIX}${resource.name}`
}

/** The event topic a resource's updates arrive on, for this caller (each principal has its own inbox). */
export function topicOf (resource: BusResource, auth: AuthContext): string {
  return resource.kind === 'inbox' ? inboxTopic(auth.principalId) : channelTopic(resource.name)
}

/** A `resources/read` URI: the resource, and optionally `?after=ID&limit=N` to page from a cursor. */
export function parseReadUri (uri: string): { resource: BusResource, after?: number, limit?: number } | undefined {
  const question = uri.indexOf('?')
  const resource = parseResourceUri(question === -1 ? uri : uri.slice(0, question))
  if (resource === undefined || question === -1) return resource === undefined ? undefined : { resource }
  const query = new URLSearchParams(uri.slice(question + 1))
  const read: { resource: BusResource, after?: number, limit?: number } = { resource }
  for (const [key, value] of query) {
    if (!/^\d{1,15}$/.test(value)) return undefined
    if (key === 'after' && read.after === undefined) read.after = Number(value)
    else if (key === 'limit' && read.limit === undefined && Number(value) >= 1 && Number(value) <= MAX_READ_LIMIT) read.limit = Number(value)
    else return undefined
  }
  return read
}

/** The refusal for a token that cannot read resources (in-band: the caller may re-authorize). */
export function readScopeMissing (uri: string): ProtocolError {
  return new ProtocolError(-32602, `This token lacks the "${READ_SCOPE}" scope needed to read or subscribe to ${uri}.`, { uri, requiredScope: READ_SCOPE })
}

export function canRead (auth: AuthContext): boolean {
  return auth.scopes.includes(READ_SCOPE)
}

/** `resources/list`, `resources/templates/list` and `resources/read` over the bus. */
export class BusResources {
  private readonly bus: Bus

  constructor (bus: Bus) {
    this.bus = bus
  }

  async list (auth: AuthContext, cursor: string | undefined): Promise<{ resources: Resource[], nextCursor?: string }> {
    if (!canRead(auth)) return { resources: [] }
    const after = cursor === undefined ? '' : decodeCursor(cursor)
    const page = await this.bus.channelPage(after, PAGE_SIZE)
    const resources: Resource[] = cursor === undefined
      ? [{ uri: INBOX_URI, name: 'inbox', title: 'Your inbox', description: `Direct messages to you (${auth.principalName}).`, mimeType: MIME_TYPE }]
      : []
    for (const channel of page.channels) {
      resources.push({
        uri: resourceUri({ kind: 'channel', name: channel.name }),
        name: channel.name,
        title: `#${channel.name}`,
        description: `Channel "${channel.name}": ${channel.messages} message${channel.messages === 1 ? '' : 's'}, newest id ${channel.last_message_id}.`,
        mimeType: MIME_TYPE
      })
    }
    const last = page.channels.at(-1)
    return page.more && last !== undefined ? { resources, nextCursor: encodeCursor(last.name) } : { resources }
  }

  templates (): { resourceTemplates: ResourceTemplateType[] } {
    return {
      resourceTemplates: [{
        uriTemplate: CHANNEL_URI_TEMPLATE,
        name: 'channel',
        title: 'A channel',
        description: `A channel's latest ${LATEST_MESSAGES} messages, or with "after" the messages after that id (at most "limit", default 100), oldest first. ` +
          'Subscribe (subscriptions/listen) to bus://channels/NAME to hear of new ones, even before the channel\'s first message.',
        mimeType: MIME_TYPE
      }]
    }
  }

  async read (auth: AuthContext, uri: string): Promise<{ contents: Array<{ uri: string, mimeType: string, text: string }> }> {
    const read = parseReadUri(uri)
    if (read === undefined) throw new ResourceNotFoundError(uri)
    if (!canRead(auth)) throw readScopeMissing(uri)
    const channel = read.resource.kind === 'channel' ? read.resource.name : undefined
    let content: unknown
    if (read.after === undefined && read.limit === undefined) {
      content = await this.bus.latest(auth, channel, LATEST_MESSAGES)
    } else {
      // Paging from a cursor is bus_read without waiting; its only input error left is a
      // channel not created yet, which is a resource not found.
      content = await this.bus.read(auth, { channel, after: read.after, limit: read.limit }).then(
        ({ waited_ms: _never, ...page }) => page,
        (err: unknown) => {
          if (err instanceof BusInputError) return undefined
          throw err
        })
    }
    if (content === undefined) throw new ResourceNotFoundError(uri)
    return { contents: [{ uri, mimeType: MIME_TYPE, text: JSON.stringify(content) }] }
  }
}

function encodeCursor (name: string): string {
  return Buffer.from(name, 'utf8').toString('base64url')
}

function decodeCursor (cursor: string): string {
  const name = /^[A-Za-z0-9_-]{1,100}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : ''
  if (!CHANNEL_NAME_PATTERN.test(name)) throw new ProtocolError(-32602, 'Invalid params: unknown cursor (use the nextCursor of the previous resources/list page)')
  return name
}
